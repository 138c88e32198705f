// Package console serves Linkfabric's web console: a page that is a
// control endpoint of its own, which talks to the master straight over
// NATS, from the browser, through a NATS server's WebSocket listener. The
// server only hands out the page; everything the page does goes over NATS
// as the control user it logs in as, with that user's broker permissions
// and the master's grants (docs/console.md).
//
// The page and its script are embedded from dist/, which `npm run build`
// in web/ writes from web/src (pinned in web/package-lock.json); CI
// rebuilds it and fails if the committed bundle differs.
package console

import (
	"bytes"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"io/fs"
	"net/http"
	"net/url"
	"strings"
)

//go:embed dist
var dist embed.FS

// Config is what the page is told when it loads.
type Config struct {
	// Servers are the NATS WebSocket URLs the page connects to (ws:// or
	// wss://, host and optional port; no credentials in them). They are
	// also the only places the page may connect to (its
	// Content-Security-Policy).
	Servers []string `json:"servers"`
	// Prefix is the cluster's subject prefix (FABRIC_SUBJECT_PREFIX).
	Prefix string `json:"prefix"`
	// Version is the fabric's version, shown in the page.
	Version string `json:"version,omitempty"`
}

// configMarker is replaced in index.html by the page's configuration.
const configMarker = "{{LINKFABRIC_CONFIG}}"

// ErrConfig is a Config that cannot be served: it wraps what is wrong.
var ErrConfig = errors.New("console: bad configuration")

// CheckServers checks that each of servers is a ws:// or wss:// URL with a
// host and nothing a browser could not connect to, or put in a
// Content-Security-Policy.
func CheckServers(servers []string) error {
	if len(servers) == 0 {
		return fmt.Errorf("%w: no NATS WebSocket URL", ErrConfig)
	}
	for _, s := range servers {
		u, err := url.Parse(s)
		if err != nil || (u.Scheme != "ws" && u.Scheme != "wss") || u.Host == "" || u.User != nil ||
			u.RawQuery != "" || u.Fragment != "" || strings.ContainsAny(s, " ;,'\"") {
			return fmt.Errorf("%w: %q: want a ws:// or wss:// URL such as wss://nats.example:443", ErrConfig, s)
		}
	}
	return nil
}

// Handler returns the handler that serves the page: index.html (with cfg
// in it) at /, and its script and style sheet. Every response forbids
// the page to load or connect to anything but its own origin and
// cfg.Servers. It is safe for concurrent use.
func Handler(cfg Config) (http.Handler, error) {
	if err := CheckServers(cfg.Servers); err != nil {
		return nil, err
	}
	page, err := dist.ReadFile("dist/index.html")
	if err != nil {
		return nil, err
	}
	conf, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	if !bytes.Contains(page, []byte(configMarker)) {
		return nil, errors.New("console: the embedded index.html has no place for the configuration")
	}
	page = bytes.Replace(page, []byte(configMarker), []byte(html.EscapeString(string(conf))), 1)
	files, err := fs.Sub(dist, "dist")
	if err != nil {
		return nil, err
	}
	static := http.FileServerFS(files)
	csp := contentSecurityPolicy(cfg.Servers)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", csp)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-cache")
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			h.Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		switch r.URL.Path {
		case "/", "/index.html":
			h.Set("Content-Type", "text/html; charset=utf-8")
			_, _ = w.Write(page)
		case "/app.js", "/style.css", "/favicon.svg":
			static.ServeHTTP(w, r)
		default:
			http.NotFound(w, r)
		}
	}), nil
}

// contentSecurityPolicy allows the page its own script, style sheet and
// icon, and connections to servers alone: no inline script, no other
// origin, no frames.
func contentSecurityPolicy(servers []string) string {
	return "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; " +
		"connect-src " + strings.Join(servers, " ") + "; " +
		"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
}
