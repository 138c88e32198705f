package fabric

import (
	"encoding/json"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/linkfabric/linkfabric/internal/testkit"
)

// A try to take the lease whose write was stored but whose answer was
// lost (JetStream slow on a loaded machine) leaves the key holding this
// master's own record: the next try takes the lease rather than stand by
// against itself until the record expires; another master's record still
// means standing by.
func TestLeaseTakenAfterALostAnswer(t *testing.T) {
	b, err := StartBroker("127.0.0.1:0", t.TempDir())
	testkit.NoErr(t, err, "start a broker")
	defer b.Close()
	nc, err := natsgo.Connect(b.ClientURL())
	testkit.NoErr(t, err, "connect")
	defer nc.Close()
	js, err := jetstream.New(nc)
	testkit.NoErr(t, err, "jetstream")
	ctx := testkit.Ctx(t, 30*time.Second)

	l, err := openLease(ctx, js, "lf", 1, 10*time.Second, memberRecord{ID: "aaaaaaaa", Name: "test/1"})
	testkit.NoErr(t, err, "open the lease")
	other, err := openLease(ctx, js, "lf", 1, 10*time.Second, memberRecord{ID: "bbbbbbbb", Name: "test/2"})
	testkit.NoErr(t, err, "open the lease again")

	// The lost answer: the record is there, the master did not hear so.
	mine, _ := json.Marshal(memberRecord{V: stateVersion, ID: "aaaaaaaa", Name: "test/1", Since: time.Now().UTC()})
	_, err = l.kv.Create(ctx, keyActive, mine)
	testkit.NoErr(t, err, "store the record")

	won, err := other.acquire(ctx)
	testkit.NoErr(t, err, "another master's try")
	if won {
		t.Fatal("another master took a lease held by this one")
	}
	won, err = l.acquire(ctx)
	testkit.NoErr(t, err, "this master's next try")
	if !won || !l.valid() {
		t.Fatalf("this master's next try: won %v, valid %v; want the lease, valid", won, l.valid())
	}
	testkit.NoErr(t, l.renew(ctx, 1), "renew the lease taken")
}
