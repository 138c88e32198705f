package nats

import (
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"

	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/messages"
)

// White-box fuzz targets: parseSubject and the router are unexported, and
// route can be driven without a server. (delivery.ParseHead, which reads
// the head of a numbered event, has its own: FuzzParseHead.)

var subjectSeeds = []string{
	"lf.control.alice.master.0.list_slaves",
	"lf.master.0.control.alice._reply.0123456789abcdef.3.17",
	"lf.master.0.slave._all.banlist_update",
	"lf.slave.3.master.0._close",
	"lf.instance.7.slave.3.global_chat:chat",
	"lf.master.0.slave.3._reply.s.0.0",
	"lf.master.0.slave.3._reply.s.18446744073709551615.1",
	"lf.master.0.slave.3._reply.s.18446744073709551616.1",
	"lf.master.0.slave.3._reply.s.-1.1",
	"lf.master.0.slave.3._reply.s.01.007",
	"lf.master.0.slave.3._reply..1.1",
	"lf.master.0.slave._all._reply.s.1.1",
	"lf.master.0.slave._all._close",
	"lf.master._all.slave.3.ping",
	"lf.master.0.slave.3._other",
	"lf.master.0.slave.3.",
	"lf.master.0.slave.3",
	"lf.master.0.slave.3.a.b",
	"lf.Master.0.slave.3.ping",
	"lf.master.-x.slave.3.ping",
	"lf..0.slave.3.ping",
	"lf.",
	"lf",
	"",
	"x.y.master.0.slave.3.ping",
	"lfx.master.0.slave.3.ping",
	"lf.master.0.slave.3.ping\x00",
	"lf.master.0.slave." + strings.Repeat("a", 64) + ".ping",
	"lf.master.0.slave." + strings.Repeat("a", 65) + ".ping",
	"lf.slave.3.master.0.update_instances.0123456789abcdef",
	"lf.slave.3.master.0.update_instances.0123456789abcdef.fedcba9876543210",
	"lf.slave.3.master.0.update_instances.0123456789abcdef.fedcba9876543210.x",
	"lf.slave.3.master.0.update_instances.0123-456789abcdef",
	"lf.master.0.slave._all.banlist_update.0123456789abcdef",
	"lf.master.0.slave._all.banlist_update.0123456789abcdef.fedcba9876543210",
	"lf.master.0.control.alice._reply.0123456789abcdef.3.17.5000",
	"lf.master.0.control.alice._reply.0123456789abcdef.3.17.0",
	"lf.master.0.control.alice._reply.0123456789abcdef.3.17.05",
	"lf.master.0.control.alice._reply.0123456789abcdef.3.17.5000.12",
	"lf.master.0.control.alice._reply.0123456789abcdef.3.17.5000.18",
	"lf.master.0.control.alice._reply.0123456789abcdef.3.17.5000.0",
	"lf.master.0.control.alice._reply.0123456789abcdef.3.17.5000.12.fedcba9876543210",
	"lf.master.0.control.alice._reply.0123456789abcdef.3.17.5000.12.fedcba98-76543210",
	"lf.master.0.control.alice._reply.0123456789abcdef.3.17.5000.12.a.b",
	"lf.slave.3.master.0._close.0123456789abcdef.fedcba9876543210",
	"lf.slave.3.master.0._close.0123456789abcdef." + strings.Repeat("f", 33),
	"lf.slave.3.master.0.instance_output.0123456789abcdef.-",
	"lf.slave.3.master.0.instance_output.-.0123456789abcdef",
	"lf.slave.3.master.0.instance_output.0123456789abcdef.-.1",
	"lf.master.0.slave._all.banlist_update.0123456789abcdef.-",
	"lf.slave.3.master.0._ack.0123456789abcdef.fedcba9876543210.17",
	"lf.slave.3.master.0._ackall.0123456789abcdef.fedcba9876543210.17.gap",
	"lf.slave.3.master.0._ackall.0123456789abcdef.fedcba9876543210.017",
}

// parseSubject never panics, and what it accepts is a subject the
// connector renders: rendering the parsed parts gives the input back.
func FuzzParseSubject(f *testing.F) {
	for _, s := range subjectSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, prefix := range []string{"lf", "x.y"} {
			sub, err := parseSubject(prefix+".", s)
			if err != nil {
				if !errors.Is(err, errSubject) {
					t.Errorf("parseSubject(%q, %q): error %v is not errSubject", prefix, s, err)
				}
				continue
			}
			if err := sub.src.Validate(); err != nil {
				t.Errorf("parseSubject(%q, %q): sender %s: %v", prefix, s, sub.src, err)
			}
			if sub.dst.ID != BroadcastID || sub.kind != subjMessage {
				if err := sub.dst.Validate(); err != nil {
					t.Errorf("parseSubject(%q, %q): receiver %s: %v", prefix, s, sub.dst, err)
				}
			}
			var again string
			switch sub.kind {
			case subjMessage:
				if sub.msgType == "" || sub.msgType[0] == '_' || strings.Contains(sub.msgType, ".") {
					t.Errorf("parseSubject(%q, %q): message type %q", prefix, s, sub.msgType)
				}
				again = messageSubject(prefix, sub.src, sub.dst, sub.msgType, sub.srcSession, sub.dstSession)
				if sub.stream && sub.dst.ID != BroadcastID {
					again = eventSubject(prefix, sub.src, sub.dst, sub.msgType, sub.srcSession, sub.dstSession)
				}
			case subjReply:
				again = replySubject(prefix, sub.src, sub.dst, sub.session, sub.conn, sub.seq, sub.budget, sub.low)
				if sub.respSession != "" {
					again = responseSubject(again, sub.respSession)
				}
			case subjClose:
				again = closeSubject(prefix, sub.src, sub.dst, sub.srcSession, sub.dstSession)
			case subjAck:
				again = ackSubject(prefix, sub.src, sub.dst, sub.srcSession, sub.dstSession, sub.ackSeq, sub.gap, sub.all)
			default:
				t.Fatalf("parseSubject(%q, %q): kind %d", prefix, s, sub.kind)
			}
			if again != s {
				t.Errorf("parseSubject(%q, %q) = %+v, which renders as %q", prefix, s, sub, again)
			}
		}
	})
}

const (
	fuzzSession     = "0123456789abcdef" // the Node's
	fuzzPeerSession = "bbbbbbbbbbbbbbbb" // control/bob's, bound
)

// offlineConn returns a nats.go connection that never reaches a server:
// it publishes nothing, which is all route needs of it.
func offlineConn(tb testing.TB) *natsgo.Conn {
	tb.Helper()
	nc, err := natsgo.Connect("nats://127.0.0.1:1",
		natsgo.RetryOnFailedConnect(true), natsgo.MaxReconnects(-1), natsgo.ReconnectWait(time.Hour),
		natsgo.ReconnectBufSize(-1), natsgo.NoCallbacksAfterClientClose())
	if err != nil {
		tb.Fatalf("offline connection: %v", err)
	}
	tb.Cleanup(nc.Close)
	return nc
}

// fuzzNode returns a master Node on nc, not connected to anything and with
// no dispatcher, holding a Dial'ed connector to slave/3 (number 1, not yet
// bound, with request 1 pending) and an accepted one bound to control/bob
// (number 2). Its accept function takes every peer but control/refused,
// without starting a link, so what it delivers stays in the connectors'
// queues.
func fuzzNode(tb testing.TB, nc *natsgo.Conn) (*Node, *[]*Conn) {
	tb.Helper()
	var conns []*Conn
	o := defaultOptions()
	o.logger = slog.New(slog.DiscardHandler)
	o.noRespondersFor = 0 // no timers: a 503 fails the request at once
	o.peerQueue = 4
	o.accept = func(c *Conn) error {
		conns = append(conns, c)
		if c.Peer().ID == "refused" {
			return errors.New("refused")
		}
		return nil
	}
	o.session = fuzzSession
	n := newNode(link.MasterAddress, o)
	n.nc = nc
	close(n.connected)
	d, err := n.Dial(link.Address{Type: messages.Slave, ID: "3"})
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := d.reqs.Send(outRequest{id: 1, typ: "assign_instance", subject: "lf.master.0.slave.3.assign_instance"}, time.Now().Add(time.Hour), time.Now()); err != nil {
		tb.Fatal(err)
	}
	n.mu.Lock()
	bob := n.newConnLocked(link.Address{Type: messages.Control, ID: "bob"}, fuzzPeerSession, true)
	n.mu.Unlock()
	conns = append(conns, d, bob)
	return n, &conns
}

// route never panics or blocks, whatever the subject, headers and body.
// A message it cannot parse is counted as dropped and goes nowhere; a
// request or event is either delivered to exactly one connector, well
// formed, or counted as dropped.
func FuzzRoute(f *testing.F) {
	type seed struct {
		subject, reply                                          string
		id, timeout, session, peerSession, origin, code, status string
		data                                                    string
	}
	reply := "lf.control.bob.master.0._reply.cccccccccccccccc.1.1"
	seeds := []seed{
		{subject: "lf.control.bob.master.0.list_slaves", reply: reply, id: "1", timeout: "5000", session: fuzzPeerSession, data: "{}"},
		{subject: "lf.control.bob.master.0.list_slaves", reply: reply, data: "{}"},
		{subject: "lf.control.alice.master.0.ping", reply: "_INBOX.x", timeout: "0", data: "{}"},
		{subject: "lf.control.alice.master.0.ping", reply: "_INBOX.x", timeout: "86400000", id: "18446744073709551615"},
		{subject: "lf.control.alice.master.0.ping", reply: "_INBOX.x", id: "-1"},
		{subject: "lf.control.refused.master.0.ping", reply: "_INBOX.x"},
		{subject: "lf.slave.3.master.0.update_instances", session: "dddddddddddddddd", data: `{"instances":[]}`, origin: "slave/3"},
		{subject: "lf.slave.3.master.0.update_instances", origin: "nowhere"},
		{subject: "lf.slave.3.master.0.update_instances", peerSession: "eeeeeeeeeeeeeeee"},
		{subject: "lf.slave.3.master.0._reply." + fuzzSession + ".1.1", session: "dddddddddddddddd", data: "{}"},
		{subject: "lf.slave.3.master.0._reply." + fuzzSession + ".1.1", status: "503"},
		{subject: "lf.slave.3.master.0._reply." + fuzzSession + ".1.1", code: "not a code", data: "x"},
		{subject: "lf.slave.3.master.0._reply." + fuzzSession + ".1.1", code: "myplugin.not_ready", data: "later"},
		{subject: "lf.slave.3.master.0._reply." + fuzzSession + ".2.1", data: "{}"},
		{subject: "lf.slave.3.master.0._reply.ffffffffffffffff.1.1", data: "{}"},
		{subject: "lf.control.bob.master.0._close", session: fuzzPeerSession},
		{subject: "lf.slave.3.master.0._close"},
		{subject: "lf.slave.3.master._all.banlist_update", reply: "_INBOX.y"},
		{subject: "lf.master.0.master.0.ping", reply: "_INBOX.z"},
		{subject: "lf.master.1.master.0.ping"},
		{subject: "lf.control.bob.slave.3.ping", reply: "_INBOX.z"},
		{subject: "garbage", reply: "_INBOX.z", data: "\x00\xff"},
	}
	for _, s := range seeds {
		f.Add(s.subject, s.reply, s.id, s.timeout, s.session, s.peerSession, s.origin, s.code, s.status, []byte(s.data))
	}
	nc := offlineConn(f)
	f.Fuzz(func(t *testing.T, subject, reply, id, timeout, session, peerSession, origin, code, status string, data []byte) {
		n, conns := fuzzNode(t, nc)
		// Sessions travel in the subject; a response's in a header.
		if session != "" && !strings.Contains(subject, "._reply.") {
			subject += "." + session
			if peerSession != "" {
				subject += "." + peerSession
			}
		}
		msg := &natsgo.Msg{Subject: subject, Reply: reply, Header: natsgo.Header{}, Data: data}
		for k, v := range map[string]string{
			hdrID: id, hdrTimeout: timeout, hdrSession: session,
			hdrOrigin: origin, hdrError: code, hdrStatus: status,
		} {
			if v != "" {
				msg.Header.Set(k, v)
			}
		}
		before := len(*conns)
		newRouter(n).route(msg)
		dropped := n.Dropped()
		if len(*conns)-before > 1 {
			t.Errorf("route offered %d new connectors; at most one per message", len(*conns)-before)
		}

		var got []*link.Envelope
		for _, c := range *conns {
			for m, ok := c.queue.pop(); ok; m, ok = c.queue.pop() {
				got = append(got, m)
			}
			_ = c.Close()
		}
		if len(got) > 1 {
			t.Fatalf("one message delivered %d times", len(got))
		}
		sub, perr := parseSubject("lf.", subject)
		if perr != nil {
			if dropped != 1 || len(got) != 0 {
				t.Fatalf("unparsable subject %q: dropped %d, delivered %d; want dropped 1, delivered 0", subject, dropped, len(got))
			}
			return
		}
		if len(got) == 0 {
			if dropped == 0 && sub.kind == subjMessage {
				t.Fatalf("%s neither delivered nor counted as dropped", subject)
			}
			return
		}
		m := got[0]
		now := time.Now()
		switch m.Kind {
		case messages.KindRequest:
			if sub.kind != subjMessage || reply == "" || m.Reply != reply || m.Type != sub.msgType {
				t.Errorf("request %+v from subject %q reply %q", m, subject, reply)
			}
			if !m.Deadline.IsZero() && (m.Deadline.Before(now.Add(-time.Minute)) || m.Deadline.After(now.Add(24*time.Hour))) {
				t.Errorf("request deadline %s from Lf-Timeout %q", m.Deadline, timeout)
			}
			if sub.dst.ID == BroadcastID {
				t.Errorf("a broadcast request was delivered: %q", subject)
			}
		case messages.KindEvent:
			if sub.kind != subjMessage || reply != "" || m.Type != sub.msgType || m.Reply != "" {
				t.Errorf("event %+v from subject %q reply %q", m, subject, reply)
			}
			if !m.Origin.IsZero() && m.Origin.Validate() != nil {
				t.Errorf("event with origin %v from Lf-Origin %q", m.Origin, origin)
			}
		case messages.KindResponse:
			if sub.kind != subjReply {
				t.Errorf("response %+v from subject %q", m, subject)
			}
			if m.Error != nil && !link.ValidCode(m.Error.Code) {
				t.Errorf("response with error code %q from Lf-Error %q", m.Error.Code, code)
			}
			if m.Error != nil && m.Data != nil {
				t.Errorf("a failed response with data %q", m.Data)
			}
		default:
			t.Errorf("delivered a message of kind %v", m.Kind)
		}
	})
}

// newRouter returns a router for n with nothing remembered.
func newRouter(n *Node) *router {
	return &router{n: n, known: map[string]subject{}}
}
