package fabric

import (
	"testing"
	"time"

	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/messages"
)

// BenchmarkMetricsPerRequest is what the metrics cost a request on both of
// its ends: the requester counts it sent and its response received, and
// times it; the handler's end counts it received and its response sent,
// and times the handler.
func BenchmarkMetricsPerRequest(b *testing.B) {
	catalog, err := messages.NewCatalog()
	if err != nil {
		b.Fatal(err)
	}
	m := newMetrics(catalog)
	req := &link.Envelope{Kind: messages.KindRequest, Type: messages.SendCommand.Name()}
	resp := &link.Envelope{Kind: messages.KindResponse, Type: messages.SendCommand.Name()}
	b.ReportAllocs()
	for b.Loop() {
		m.Sent(messages.ControlToMaster, req)
		m.Received(messages.ControlToMaster, req)
		m.HandlerEnded(messages.KindRequest, req.Type, nil, time.Millisecond)
		m.Sent(messages.MasterToControl, resp)
		m.Received(messages.MasterToControl, resp)
		m.RequestEnded(req.Type, nil, time.Millisecond)
	}
}
