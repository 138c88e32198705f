package link

import (
	"context"

	"github.com/linkfabric/linkfabric/internal/codec"
	"github.com/linkfabric/linkfabric/messages"
)

// Request sends req as a request of type m and returns the decoded
// response. req is checked against the schema before anything is sent: a
// bad payload fails here with an *Error of CodeInvalidMessage that wraps
// the *messages.ValidationError naming the field. Otherwise it ends as
// RequestJSON does.
func Request[Req, Resp any](ctx context.Context, l *Link, m *messages.Request[Req, Resp], req Req) (Resp, error) {
	var resp Resp
	def := m.Definition
	if err := l.checkOutbound(def, messages.KindRequest); err != nil {
		return resp, err
	}
	var payload []byte
	var value any
	if v := any(req); l.values && codec.ValueOK(def, false, v) {
		value = v // checked: it travels as it is
	} else {
		var err error
		if payload, err = m.EncodeRequest(req); err != nil {
			return resp, invalid(err)
		}
	}
	data, respValue, err := l.request(ctx, def, payload, value, outbound{})
	if err != nil {
		return resp, err
	}
	if r, ok := respValue.(Resp); ok {
		return r, nil
	}
	if err := codec.Unmarshal(m.Definition, "response", data, &resp); err != nil {
		return resp, invalid(err)
	}
	return resp, nil
}

// Emit sends ev as an event of type m, checked against the schema first.
func Emit[T any](ctx context.Context, l *Link, m *messages.Event[T], ev T) error {
	if err := l.checkOutbound(m.Definition, messages.KindEvent); err != nil {
		return err
	}
	if v := any(ev); l.values && codec.ValueOK(m.Definition, false, v) {
		return l.emit(ctx, &Envelope{Kind: messages.KindEvent, Type: m.Name(), Value: v})
	}
	payload, err := m.Encode(ev)
	if err != nil {
		return invalid(err)
	}
	return l.emit(ctx, &Envelope{Kind: messages.KindEvent, Type: m.Name(), Data: payload})
}

// HandleRequest attaches h to answer requests of type m on l. h gets the
// decoded request; its response is checked against the schema before it is
// sent (an invalid one reaches the requester as CodeInternal). h runs as a
// RequestHandler does (see NonBlocking for opts). Call it before Start;
// mistakes are reported by Start.
func HandleRequest[Req, Resp any](l *Link, m *messages.Request[Req, Resp], h func(ctx context.Context, req Req) (Resp, error), opts ...HandlerOption) {
	l.attach(m, messages.KindRequest, &handler{checked: true, values: true, request: func(ctx context.Context, msg *Envelope) ([]byte, error) {
		req, ok := msg.Value.(Req)
		if !ok {
			if err := codec.Unmarshal(m.Definition, "request", msg.Data, &req); err != nil {
				return nil, invalid(err)
			}
		}
		resp, err := h(ctx, req)
		if err != nil {
			return nil, err
		}
		// The link calls its handlers with a *requestCtx.
		if rc, ok := ctx.(*requestCtx); ok && rc.l.values {
			if v := any(resp); codec.ValueOK(m.Definition, true, v) {
				rc.value = v
				return nil, nil
			}
		}
		data, err := m.EncodeResponse(resp)
		if err != nil {
			return nil, &Error{Code: CodeInternal, Message: err.Error(), cause: err}
		}
		return data, nil
	}}, opts)
}

// HandleEvent attaches h to handle events of type m on l, decoded, as an
// EventHandler is (see NonBlocking for opts). Call it before Start;
// mistakes are reported by Start.
func HandleEvent[T any](l *Link, m *messages.Event[T], h func(ctx context.Context, ev T) error, opts ...HandlerOption) {
	l.attach(m, messages.KindEvent, &handler{values: true, event: func(ctx context.Context, msg *Envelope) error {
		ev, ok := msg.Value.(T)
		if !ok {
			if err := codec.Unmarshal(m.Definition, "event", msg.Data, &ev); err != nil {
				return err
			}
		}
		return h(ctx, ev)
	}}, opts)
}
