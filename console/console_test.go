package console_test

import (
	"errors"
	"html"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/linkfabric/linkfabric/console"
)

func serve(t *testing.T, cfg console.Config) *httptest.Server {
	t.Helper()
	h, err := console.Handler(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

func get(t *testing.T, url string) (*http.Response, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(body)
}

// TestPage: the page carries its configuration, and every response lets
// it load only from its own origin and connect only to the NATS servers
// configured.
func TestPage(t *testing.T) {
	cfg := console.Config{Servers: []string{"ws://127.0.0.1:4223", "wss://nats.example:443"}, Prefix: "acme", Version: "v1"}
	srv := serve(t, cfg)
	resp, body := get(t, srv.URL+"/")
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET / = %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	m := regexp.MustCompile(`<meta name="linkfabric" content="([^"]*)">`).FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no configuration in the page:\n%s", body)
	}
	if got, want := html.UnescapeString(m[1]), `{"servers":["ws://127.0.0.1:4223","wss://nats.example:443"],"prefix":"acme","version":"v1"}`; got != want {
		t.Errorf("configuration %s, want %s", got, want)
	}
	for _, path := range []string{"/", "/app.js", "/style.css", "/favicon.svg", "/nothing"} {
		resp, _ := get(t, srv.URL+path)
		csp := resp.Header.Get("Content-Security-Policy")
		for _, want := range []string{"default-src 'none'", "script-src 'self';", "connect-src ws://127.0.0.1:4223 wss://nats.example:443;", "frame-ancestors 'none'"} {
			if !strings.Contains(csp, want) {
				t.Errorf("GET %s: Content-Security-Policy %q lacks %q", path, csp, want)
			}
		}
		if strings.Contains(csp, "unsafe") || strings.Contains(csp, "*") {
			t.Errorf("GET %s: Content-Security-Policy %q allows more than the page needs", path, csp)
		}
	}
	if resp, _ := get(t, srv.URL+"/nothing"); resp.StatusCode != 404 {
		t.Errorf("GET /nothing = %d, want 404", resp.StatusCode)
	}
	if resp, body := get(t, srv.URL+"/app.js"); resp.StatusCode != 200 || !strings.Contains(resp.Header.Get("Content-Type"), "javascript") || len(body) < 1000 {
		t.Errorf("GET /app.js = %d %s, %d bytes", resp.StatusCode, resp.Header.Get("Content-Type"), len(body))
	}
	r, err := http.Post(srv.URL+"/", "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST / = %d, want 405", r.StatusCode)
	}
}

// TestPageLoadsNothingElse: the page refers to no other origin: its
// script, style sheet and icon are its own.
func TestPageLoadsNothingElse(t *testing.T) {
	srv := serve(t, console.Config{Servers: []string{"ws://127.0.0.1:4223"}})
	_, page := get(t, srv.URL+"/")
	_, style := get(t, srv.URL+"/style.css")
	for _, text := range []string{page, style} {
		for _, ref := range regexp.MustCompile(`(?:src|href)="([^"]*)"|url\(([^)]*)\)`).FindAllStringSubmatch(text, -1) {
			if u := ref[1] + ref[2]; strings.Contains(u, ":") || strings.HasPrefix(u, "//") {
				t.Errorf("the page refers to %q, outside its own origin", u)
			}
		}
	}
}

func TestBadServers(t *testing.T) {
	for _, servers := range [][]string{nil, {"nats://127.0.0.1:4222"}, {"http://x"}, {"ws://"}, {"ws://u:p@host:1"}, {"ws://h:1; script-src *"}} {
		if _, err := console.Handler(console.Config{Servers: servers}); !errors.Is(err, console.ErrConfig) {
			t.Errorf("servers %q: err %v, want ErrConfig", servers, err)
		}
	}
}
