package fabric

import (
	"net"
	"slices"
	"testing"
)

// addrListener is a listener that only has an address.
type addrListener struct{ net.Listener }

func (addrListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4zero, Port: 4280} }

// TestAttack2ConsoleOnEveryInterfaceKeepsOrigins: a console that listens
// on every interface (FABRIC_CONSOLE_ADDR=:4280) is still the only origin
// whose pages may use the embedded broker's WebSocket listener; none
// would let every web site the user visits drive the cluster.
func TestAttack2ConsoleOnEveryInterfaceKeepsOrigins(t *testing.T) {
	p := &Master{consoleLn: addrListener{}}
	origins := p.consoleOrigins()
	if len(origins) == 0 {
		t.Fatal("no origins: every web page may connect to the broker")
	}
	for _, want := range []string{"http://127.0.0.1:4280", "http://localhost:4280"} {
		if !slices.Contains(origins, want) {
			t.Errorf("origins %v lack %s, where the console's URL points", origins, want)
		}
	}
}
