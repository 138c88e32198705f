//go:build unix

package main_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"image/png"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	"github.com/nats-io/nats-server/v2/server"
)

// The web console's tests drive the page in headless Chromium (Debian's
// chromium package, which .ci/run installs) against fabric dev. Without
// chromium they are skipped, unless LF_REQUIRE_CHROMIUM=1 (CI sets it)
// makes its absence a failure. With LF_CONSOLE_SCREENSHOTS=DIR they write
// the screenshots of docs/console.md there.

// within is how soon the page must show what happened elsewhere.
const within = time.Second

// browser is one headless Chromium, for one test.
type browser struct {
	ctx context.Context // the first tab's
}

func newBrowser(t *testing.T) *browser {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv("LF_REQUIRE_CHROMIUM") == "1" {
			t.Fatalf("LF_REQUIRE_CHROMIUM=1, but chromium is not installed: %v (apt-get install chromium)", err)
		}
		t.Skipf("chromium is not installed (%v); .ci/run installs it", err)
	}
	actx, cancel := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		// Nothing but the page's own traffic: on a closed network the
		// browser's own connections are refused, and would be noise.
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1100, 1000),
	)
	t.Cleanup(cancel)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(cancel)
	return &browser{ctx: ctx}
}

// tab is a page of the console in a browser tab, with everything it asked
// the network for and every exception it threw.
type tab struct {
	t       *testing.T
	ctx     context.Context
	mu      sync.Mutex
	urls    []string
	thrown  []string
	console string // the console's origin, http://host:port
}

// open opens the console at u in a new tab (the first tab, the first
// time) and waits until it has loaded.
func (b *browser) open(t *testing.T, u string) *tab {
	t.Helper()
	ctx := b.ctx
	if chromedp.FromContext(ctx).Target != nil {
		var cancel context.CancelFunc
		ctx, cancel = chromedp.NewContext(b.ctx)
		t.Cleanup(cancel)
	}
	parsed, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	p := &tab{t: t, ctx: ctx, console: parsed.Scheme + "://" + parsed.Host}
	err = chromedp.Listen(ctx, func(ev any) {
		p.mu.Lock()
		defer p.mu.Unlock()
		switch ev := ev.(type) {
		case *network.EventRequestWillBeSent:
			p.urls = append(p.urls, ev.Request.URL)
		case *network.EventWebSocketCreated:
			p.urls = append(p.urls, ev.URL)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for m, err := range chromedp.Console(ctx) {
			if err != nil {
				return
			}
			// A refused connection (while the server restarts) is the
			// browser's network log, not the page's fault; what the page
			// reaches is checked by its URLs. A blocked load (CSP) is a
			// "security" entry, and fails the test.
			if m.IsException() || (m.Type == chromedp.ConsoleError && m.Source != "network") {
				p.mu.Lock()
				p.thrown = append(p.thrown, m.Text)
				p.mu.Unlock()
			}
		}
	}()
	p.do(chromedp.Navigate(u))
	t.Cleanup(p.checkClean)
	return p
}

// do runs actions, bounded by waitLong, failing the test with the page's
// text if they fail.
func (p *tab) do(actions ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, waitLong)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		p.t.Fatalf("%v\npage:\n%s", err, p.text())
	}
}

// eval returns the value of a JavaScript expression.
func eval[T any](p *tab, expr string) T {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, waitLong)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		p.t.Fatalf("%s: %v", expr, err)
	}
	return v
}

// waitFor waits, for at most d, until the JavaScript expression is true,
// and returns how long that took.
func (p *tab) waitFor(d time.Duration, what, expr string) time.Duration {
	p.t.Helper()
	began := time.Now()
	ctx, cancel := context.WithTimeout(p.ctx, d+waitLong) // the bound is WithPollingTimeout's
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingTimeout(d), chromedp.WithPollingInterval(10*time.Millisecond))); err != nil {
		p.t.Fatalf("the page does not show %s within %s (%v)\npage:\n%s", what, d, err, p.text())
	}
	return time.Since(began)
}

func (p *tab) text() string {
	ctx, cancel := context.WithTimeout(p.ctx, 5*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.innerText`))
	if err != nil {
		return "(unreadable: " + err.Error() + ")"
	}
	return s
}

// rows is a JavaScript expression: the cells of a table's rows, each row's
// first n cells joined by spaces, the rows by "|".
func rows(table string, n int) string {
	return fmt.Sprintf(`[...document.querySelectorAll("#%s tbody tr")].map(r => [...r.cells].slice(0, %d).map(c => c.textContent).join(" ")).join("|")`, table, n)
}

// checkClean fails the test if the page threw, or reached for anything
// but its own origin and the NATS WebSocket URLs it is configured with,
// all on loopback.
func (p *tab) checkClean() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, e := range p.thrown {
		p.t.Errorf("the page threw or logged an error: %s", e)
	}
	if len(p.urls) == 0 {
		p.t.Errorf("no request seen: the network log does not work")
	}
	for _, u := range p.urls {
		parsed, err := url.Parse(u)
		if err != nil || (!strings.HasPrefix(u, p.console+"/") && parsed.Scheme != "ws") || parsed.Hostname() != "127.0.0.1" {
			p.t.Errorf("the page reached for %s: only %s and the NATS WebSocket listener on loopback are allowed", u, p.console)
		}
	}
}

// screenshot takes a PNG of the page as it is, and writes it to
// $LF_CONSOLE_SCREENSHOTS/name if that is set.
func (p *tab) screenshot(name string) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, waitLong)
	defer cancel()
	img, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		p.t.Fatal(err)
	}
	if _, err := png.Decode(bytes.NewReader(img)); err != nil {
		p.t.Fatalf("screenshot %s: %v", name, err)
	}
	if dir := os.Getenv("LF_CONSOLE_SCREENSHOTS"); dir != "" {
		if err := os.WriteFile(filepath.Join(dir, name), img, 0o644); err != nil {
			p.t.Fatal(err)
		}
	}
}

// startConsoleDev starts fabric dev with env and returns it, the NATS URL
// and the console's URL from its banner.
func startConsoleDev(t *testing.T, env ...string) (*proc, string, string) {
	t.Helper()
	env = append(append([]string{"FABRIC_NATS_LISTEN=127.0.0.1:0"}, fastTimings...), env...)
	dev := start(t, env, "dev")
	dev.waitStdout(t, regexp.MustCompile(`(?m)^Press Ctrl-C to stop\.$`))
	natsURL := dev.waitStdout(t, regexp.MustCompile(`(?m)^  NATS: +(nats://127\.0\.0\.1:\d+) \(embedded\)$`))[1]
	consoleURL := dev.waitStdout(t, regexp.MustCompile(`(?m)^  console: +(http://127\.0\.0\.1:\d+/)#user=admin$`))[1]
	return dev, natsURL, consoleURL
}

const (
	allSlaves    = "1 slave-1 yes 2|2 slave-2 yes 2"
	allInstances = "101 alpha 1 stopped|102 beta 1 stopped|201 gamma 2 stopped|202 delta 2 stopped"
)

// TestConsole runs the README's session from the browser, against fabric
// dev: lists, a start elsewhere shown live, commands and their answers,
// streamed output, history, bans, create, assign and delete, errors as
// the fabric's codes, a user without the permission, a narrow window.
func TestConsole(t *testing.T) {
	t.Parallel()
	_, natsURL, consoleURL := startConsoleDev(t, "FABRIC_CONTROL_PERMISSIONS=admin=*;viewer=core.slave.list,core.instance.list")
	c := newCtl(natsURL)
	b := newBrowser(t)
	p := b.open(t, consoleURL+"#user=admin")

	p.waitFor(waitLong, "every slave and instance", fmt.Sprintf(`%s === %q && %s === %q`, rows("slaves", 4), allSlaves, rows("instances", 4), allInstances))
	if v := eval[string](p, `document.querySelector("#slave-1").cells[4].textContent`); !regexp.MustCompile(`^\d+\.\d+\.\d+`).MatchString(v) {
		t.Errorf("slave 1's version shows as %q", v)
	}
	p.waitFor(waitLong, "connected as admin", `document.querySelector("#status").textContent === "connected as admin"`)

	// A start elsewhere shows within a second, through the subscription.
	c.ok(t, "instance", "start", "101")
	took := p.waitFor(within, "instance 101 running", `document.querySelector("#instance-101 .status").textContent === "running"`)
	t.Logf("the page showed a start by fabric ctl %s after ctl returned", took.Round(time.Millisecond))

	// The console: a command and its answer, and the output it streams.
	p.do(chromedp.Click("#instance-101 .open-console"), chromedp.WaitVisible("#console"), chromedp.SendKeys("#command", "/join alice"+kb.Enter))
	p.waitFor(waitLong, "the answer to /join alice", `[...document.querySelectorAll("#output .answer")].some(d => d.textContent === "alice joined")`)
	p.waitFor(waitLong, "the output of /join alice", `document.querySelector("#output").textContent.includes("[info] alice joined the game")`)
	c.ok(t, "instance", "command", "101", "/say", "hello from ctl")
	p.waitFor(within, "output caused elsewhere", `document.querySelector("#output").textContent.includes("[info] [server] hello from ctl")`)
	p.do(chromedp.SendKeys("#command", "/players"+kb.Enter))
	p.waitFor(waitLong, "the answer to /players", `[...document.querySelectorAll("#output .answer")].some(d => d.textContent === "1 online: alice")`)
	// History: up goes back through the commands sent, down comes back.
	p.do(chromedp.Focus("#command"), chromedp.KeyEvent(kb.ArrowUp), chromedp.KeyEvent(kb.ArrowUp))
	if v := eval[string](p, `document.querySelector("#command").value`); v != "/join alice" {
		t.Errorf("two ArrowUps give %q, want /join alice", v)
	}
	p.do(chromedp.KeyEvent(kb.ArrowDown))
	if v := eval[string](p, `document.querySelector("#command").value`); v != "/players" {
		t.Errorf("ArrowDown gives %q, want /players", v)
	}
	eval[string](p, `document.querySelector("#command").value = ""`)
	p.screenshot("console-main.png")

	// Ban from the page, as the README's session does; the instances hear it.
	p.do(chromedp.SendKeys("#ban-name", "alice"), chromedp.SendKeys("#ban-reason", "spam"), chromedp.Click("#ban"))
	p.waitFor(waitLong, "alice banned", fmt.Sprintf(`%s === "alice spam"`, rows("bans", 2)))
	if out := c.ok(t, "player", "bans"); !strings.Contains(out, "alice") {
		t.Errorf("ctl player bans after a ban from the page:\n%s", out)
	}
	p.do(chromedp.SendKeys("#command", "/players"+kb.Enter))
	p.waitFor(waitLong, "no players after the ban", `[...document.querySelectorAll("#output .answer")].some(d => d.textContent === "no players online")`)
	p.do(chromedp.Click("#bans tbody tr button"))
	p.waitFor(waitLong, "alice unbanned", fmt.Sprintf(`%s === ""`, rows("bans", 2)))

	// An error, with the fabric's code and message.
	p.do(chromedp.Click("#instance-102 .open-console"), chromedp.SendKeys("#command", "/players"+kb.Enter))
	p.waitFor(waitLong, "instance_not_running", `[...document.querySelectorAll("#output .failed")].some(d => d.textContent === "error: instance 102 (beta) is not running (instance_not_running)")`)

	// Stop with the keyboard alone: a button takes Enter.
	p.do(chromedp.Focus("#instance-101 .stop"), chromedp.KeyEvent(kb.Enter))
	c.waitInstance(t, instanceJSON{ID: 101, Name: "alpha", SlaveID: 1, Status: "stopped"})
	p.waitFor(within, "instance 101 stopped", `document.querySelector("#instance-101 .status").textContent === "stopped"`)

	// Create (typed, then Enter), assign, delete.
	p.do(chromedp.SendKeys("#create-name", "omega"+kb.Enter))
	p.waitFor(waitLong, "the new instance", `[...document.querySelectorAll("#instances tbody tr")].some(r => r.cells[1].textContent === "omega" && r.cells[3].textContent === "unassigned")`)
	var id int
	for _, i := range c.instances(t) {
		if i.Name == "omega" {
			id = int(i.ID)
		}
	}
	if id == 0 {
		t.Fatalf("ctl instance list lacks the instance created in the page: %+v", c.instances(t))
	}
	row := "#instance-" + strconv.Itoa(id)
	p.do(chromedp.SetValue(row+" select", "2"), chromedp.Click(row+" .assign"))
	p.waitFor(waitLong, "omega on slave 2", fmt.Sprintf(`document.querySelector(%q).cells[2].textContent === "2"`, row))
	c.waitInstance(t, instanceJSON{ID: int64(id), Name: "omega", SlaveID: 2, Status: "stopped"})
	p.do(chromedp.Click(row+" .delete"), chromedp.Click(row+" .delete"))
	p.waitFor(waitLong, "omega gone", fmt.Sprintf(`document.querySelector(%q) === null`, row))
	if slices.ContainsFunc(c.instances(t), func(i instanceJSON) bool { return i.Name == "omega" }) {
		t.Errorf("the instance deleted in the page is still listed by ctl")
	}

	// A narrow window: nothing sticks out sideways, the console still works.
	p.do(chromedp.EmulateViewport(400, 860), chromedp.Click("#instance-101 .start"))
	p.waitFor(waitLong, "instance 101 running", `document.querySelector("#instance-101 .status").textContent === "running"`)
	p.do(chromedp.Click("#instance-101 .open-console"))
	p.waitFor(waitLong, "a page as narrow as the window", `document.documentElement.scrollWidth <= window.innerWidth`)
	p.do(chromedp.SendKeys("#command", "/help"+kb.Enter))
	p.waitFor(waitLong, "the answer to /help", `[...document.querySelectorAll("#output .answer")].some(d => d.textContent.includes("/players"))`)
	p.screenshot("console-narrow.png")

	// A user without the permission: lists, but no start.
	v := b.open(t, consoleURL+"#user=viewer")
	v.waitFor(waitLong, "the lists, to a viewer", fmt.Sprintf(`%s === %q`, rows("slaves", 4), allSlaves))
	v.do(chromedp.Click("#instance-102 .start"))
	v.waitFor(waitLong, "permission_denied", `!document.querySelector("#error").hidden && document.querySelector("#error-text").textContent.includes("(permission_denied)")`)
	if msg := eval[string](v, `document.querySelector("#error-text").textContent`); !strings.Contains(msg, "start instance 102:") || !strings.Contains(msg, "core.instance.start") {
		t.Errorf("the error %q does not say what failed and which permission it lacks", msg)
	}
	v.screenshot("console-permission.png")
	c.waitInstance(t, instanceJSON{ID: 102, Name: "beta", SlaveID: 1, Status: "stopped"})
}

// freePort returns a loopback address that nothing listens on now.
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestConsoleMasterRestart: the page survives a restart of fabric dev
// (master and the NATS server it embeds): it reconnects, subscribes again,
// and shows the state the master kept and what happens next.
func TestConsoleMasterRestart(t *testing.T) {
	t.Parallel()
	env := []string{
		"FABRIC_NATS_LISTEN=" + freePort(t),
		"FABRIC_NATS_WS_LISTEN=" + freePort(t),
		"FABRIC_CONSOLE_ADDR=" + freePort(t),
		"FABRIC_DATA_DIR=" + t.TempDir(),
	}
	dev, natsURL, consoleURL := startConsoleDev(t, env...)
	c := newCtl(natsURL)
	p := newBrowser(t).open(t, consoleURL+"#user=admin")
	p.waitFor(waitLong, "every instance", fmt.Sprintf(`%s === %q`, rows("instances", 4), allInstances))
	p.do(chromedp.SendKeys("#create-name", "kept"+kb.Enter))
	p.waitFor(waitLong, "the new instance", `[...document.querySelectorAll("#instances tbody tr")].some(r => r.cells[1].textContent === "kept")`)
	c.ok(t, "instance", "start", "101")
	p.do(chromedp.Click("#instance-101 .open-console"))
	p.waitFor(within, "instance 101 running", `document.querySelector("#instance-101 .status").textContent === "running"`)

	if code := dev.stop(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("fabric dev exited with status %d: %s", code, dev)
	}
	p.waitFor(waitLong, "the connection lost", `document.querySelector("#status").className === "bad"`)
	_, _, _ = startConsoleDev(t, env...)
	p.waitFor(waitLong, "connected again", `document.querySelector("#status").textContent === "connected as admin"`)
	// What the master kept (the instance created, the slaves) is back; the
	// instances of the new slaves' processes start stopped.
	p.waitFor(waitLong, "the state after the restart", fmt.Sprintf(`%s === %q && %s.startsWith(%q) && %s.endsWith("kept — unassigned")`,
		rows("slaves", 4), allSlaves, rows("instances", 4), allInstances, rows("instances", 4)))
	c.ok(t, "instance", "start", "102")
	took := p.waitFor(within, "a start after the restart", `document.querySelector("#instance-102 .status").textContent === "running"`)
	t.Logf("after the restart, the page showed a start by fabric ctl %s after ctl returned", took.Round(time.Millisecond))
	c.ok(t, "instance", "start", "101")
	c.ok(t, "instance", "command", "101", "/say", "after the restart")
	p.waitFor(waitLong, "output after the restart", `document.querySelector("#output").textContent.includes("[server] after the restart")`)
}

// TestConsoleOff: the master serves no console unless asked to.
func TestConsoleOff(t *testing.T) {
	t.Parallel()
	dev := start(t, append([]string{"FABRIC_NATS_LISTEN=127.0.0.1:0", "FABRIC_CONSOLE_ADDR="}, fastTimings...), "dev")
	dev.waitStdout(t, regexp.MustCompile(`(?m)^Press Ctrl-C to stop\.$`))
	if strings.Contains(dev.stdout.String(), "console:") {
		t.Errorf("FABRIC_CONSOLE_ADDR set empty, yet dev prints a console:\n%s", dev.stdout.String())
	}
	if code := dev.stop(t, syscall.SIGTERM); code != 0 {
		t.Errorf("fabric dev exited with status %d: %s", code, dev)
	}
}

// secureWSNATS starts nats-server, in the test's process, from what
// `fabric nats-config --slaves 1 --controls alice` prints, with JetStream
// and a websocket { } block on a free loopback port that admits browsers
// from origin alone, as docs/console.md tells an operator to run it. It
// returns the server's nats:// and ws:// URLs and each NATS user's
// password. The passwords are variables defined in the file rather than in
// the server's environment (nats-server looks in both), so that parallel
// tests do not share them.
func secureWSNATS(t *testing.T, origin string) (natsURL, wsURL string, pw map[string]string) {
	t.Helper()
	auth := ok(t, nil, "nats-config", "--slaves", "1", "--controls", "alice")
	pw = map[string]string{}
	var conf strings.Builder
	for user, v := range map[string]string{"master": "MASTER", "slave-1": "SLAVE_1", "control-alice": "CONTROL_ALICE"} {
		var r [12]byte
		_, _ = rand.Read(r[:])
		pw[user] = "pw" + hex.EncodeToString(r[:])
		fmt.Fprintf(&conf, "LF_PASS_%s: %q\n", v, pw[user])
	}
	conf.WriteString(auth)
	fmt.Fprintf(&conf, "jetstream {\n  store_dir: %q\n}\n", t.TempDir())
	fmt.Fprintf(&conf, "websocket {\n  listen: \"127.0.0.1:-1\"\n  no_tls: true\n  allowed_origins: [%q]\n}\n", origin)
	opts := loadNATSConfig(t, conf.String())
	opts.Host, opts.Port, opts.NoSigs, opts.NoLog = "127.0.0.1", -1, true, true
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(waitLong) {
		s.Shutdown()
		t.Fatal("nats-server not ready")
	}
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return s.ClientURL(), s.WebsocketURL(), pw
}

// TestConsoleLogin: the page against a cluster whose NATS server requires
// the authorization fabric nats-config generates, the console served by
// the master and pointed at that server's WebSocket listener. The page
// logs in as control-alice with its password and does what a control
// does; a wrong password is an error the user can retry after; a slave's
// NATS user is refused by the broker, and the page says so.
func TestConsoleLogin(t *testing.T) {
	t.Parallel()
	consoleAddr := freePort(t)
	natsURL, wsURL, pw := secureWSNATS(t, "http://"+consoleAddr)
	login := func(user string) []string {
		return []string{"FABRIC_NATS_URL=" + natsURL, "FABRIC_NATS_USER=" + user, "FABRIC_NATS_PASSWORD=" + pw[user]}
	}
	master := start(t, slices.Concat(login("master"), fastTimings, []string{"FABRIC_CONSOLE_ADDR=" + consoleAddr, "FABRIC_CONSOLE_NATS_URL=" + wsURL}), "master")
	master.waitStdout(t, masterRunning)
	slave := start(t, slices.Concat(login("slave-1"), fastTimings, []string{"FABRIC_SLAVE_ID=1", "FABRIC_SLAVE_INSTANCES=101:alpha,102:beta"}), "slave")
	slave.waitStdout(t, regexp.MustCompile(`(?m)^slave 1 running`))
	c := ctl{env: slices.Concat(newCtl(natsURL).env, login("control-alice"), []string{"FABRIC_CONTROL_USER=alice"})}
	c.waitInstance(t, instanceJSON{ID: 102, Name: "beta", SlaveID: 1, Status: "stopped"})

	p := newBrowser(t).open(t, "http://"+consoleAddr+"/#user=alice&nats_user=control-alice")
	loginAs := func(natsUser, password string) {
		p.t.Helper()
		p.do(chromedp.SetValue("#user", "alice"), chromedp.SetValue("#nats-user", natsUser), chromedp.SetValue("#password", password), chromedp.Click(`#login-form button[type="submit"]`))
	}
	errorShown := `!document.querySelector("#error").hidden && document.querySelector("#error-text").textContent`

	// A wrong password: refused by the broker, said so, and the form stays.
	loginAs("control-alice", pw["control-alice"]+"x")
	p.waitFor(waitLong, "the refused login", errorShown+`.includes("(not_connected)")`)
	want := "cannot connect to NATS at " + wsURL + ": it does not accept this password for NATS user control-alice: check it and connect again (not_connected)"
	if msg := eval[string](p, `document.querySelector("#error-text").textContent`); msg != want {
		t.Errorf("a wrong password shows %q, want %q", msg, want)
	}
	atForm := `!document.querySelector("#login").hidden && document.querySelector("#cluster").hidden && document.querySelector("#status").textContent === "not connected"`
	if !eval[bool](p, atForm) {
		t.Errorf("after a wrong password the page is not back at the login form:\n%s", p.text())
	}

	// Retry with the right one: the lists, and a command.
	loginAs("control-alice", pw["control-alice"])
	p.waitFor(waitLong, "the lists as control-alice", fmt.Sprintf(`%s === "1 slave-1 yes 2" && %s === "101 alpha 1 stopped|102 beta 1 stopped"`, rows("slaves", 4), rows("instances", 4)))
	p.waitFor(waitLong, "connected as alice", `document.querySelector("#status").textContent === "connected as alice" && document.querySelector("#error").hidden`)
	p.do(chromedp.Click("#instance-101 .start"))
	p.waitFor(waitLong, "instance 101 running", `document.querySelector("#instance-101 .status").textContent === "running"`)
	c.waitInstance(t, instanceJSON{ID: 101, Name: "alpha", SlaveID: 1, Status: "running"})
	p.do(chromedp.Click("#instance-101 .open-console"), chromedp.WaitVisible("#console"), chromedp.SendKeys("#command", "/join alice"+kb.Enter))
	p.waitFor(waitLong, "the answer to /join alice", `[...document.querySelectorAll("#output .answer")].some(d => d.textContent === "alice joined")`)
	p.waitFor(waitLong, "the output of /join alice", `document.querySelector("#output").textContent.includes("[info] alice joined the game")`)
	// The broker answers a refused subscription before the requests sent
	// after it: none of the page's subscriptions was refused.
	if msg := eval[string](p, `document.querySelector("#error").hidden ? "" : document.querySelector("#error-text").textContent`); msg != "" {
		t.Errorf("as control-alice, the page shows the error %q", msg)
	}

	// A slave's NATS user may not act as a control: the broker refuses
	// the page's subjects, and the page goes back to the form and says
	// which user to log in with, showing no data.
	p.do(chromedp.Click("#logout"))
	p.waitFor(waitLong, "the login form", atForm)
	loginAs("slave-1", pw["slave-1"])
	p.waitFor(waitLong, "the broker's refusal", errorShown+`.includes("(permission_denied)") && `+atForm)
	want = "the NATS server does not let NATS user slave-1 act as control alice: log in with that control's own NATS user (control-alice, from fabric nats-config --controls alice) (permission_denied)"
	if msg := eval[string](p, `document.querySelector("#error-text").textContent`); msg != want {
		t.Errorf("logged in as slave-1, the page says %q, want %q", msg, want)
	}
	if n := eval[int](p, `document.querySelectorAll("#slaves tbody tr, #instances tbody tr").length`); n != 0 {
		t.Errorf("logged in as slave-1, the page lists %d slaves and instances:\n%s", n, p.text())
	}

	// And the form still works: alice again.
	loginAs("control-alice", pw["control-alice"])
	p.waitFor(waitLong, "the lists as control-alice again", fmt.Sprintf(`%s === "101 alpha 1 running|102 beta 1 stopped" && document.querySelector("#error").hidden`, rows("instances", 4)))
}
