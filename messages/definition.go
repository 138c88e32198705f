package messages

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"sync"

	jsonv2 "github.com/go-json-experiment/json"

	"github.com/linkfabric/linkfabric/messages/internal/check"
)

// Kind tells a Request from an Event, and, in a message as it travels
// (link.Envelope), either from the response that answers a request.
type Kind uint8

// The kinds of message. A definition is a request or an event; a
// response is not defined on its own (it is part of its request's
// definition) and is a kind only of envelopes. One Kind serves both, so
// that a definition's kind and an envelope's compare directly.
const (
	KindRequest  Kind = iota + 1 // a request answered by a response
	KindEvent                    // a one-way event
	KindResponse                 // only in envelopes: the answer to a request
)

// String returns "request", "event" or "response".
func (k Kind) String() string {
	switch k {
	case KindRequest:
		return "request"
	case KindEvent:
		return "event"
	case KindResponse:
		return "response"
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// Unrestricted is the permission of a control-master message that every
// control may send, such as ping. Control-master messages must declare a
// permission; this one is declared and always granted.
const Unrestricted = "unrestricted"

// InstanceIDField is the payload field that carries the target instance of
// a message forwarded to an instance.
const InstanceIDField = "instance_id"

// ErrDefinition is matched (with errors.Is) by every error returned when a
// message is defined wrongly or a catalog cannot be built.
var ErrDefinition = errors.New("messages: bad definition")

// Empty is the payload of a message that carries no data: the JSON object {}.
type Empty struct{}

// Spec describes a message to define. Only Name and Links are always needed.
type Spec struct {
	// Name is the message type: snake_case, and for plugin messages
	// "plugin_name:type".
	Name string
	// Description is one sentence for people reading the catalog.
	Description string
	// Links are the directions the message is valid on, such as
	// ControlToMaster: sent by a control and received by the master.
	Links []Direction
	// Permission is what a control's user must hold to send the request or
	// event to the master. It is required on messages valid on
	// control-master (use Unrestricted for none) and refused on every
	// other message.
	Permission string
	// ForwardTo routes the message one hop further when it arrives at an
	// endpoint that is not its destination: Instance (by the payload's
	// integer instance_id, which is added to the schema) or Master.
	ForwardTo Endpoint
	// BroadcastTo is Instance for an event that also reaches every
	// instance downstream of the endpoint that receives it.
	BroadcastTo Endpoint
	// Src and Dst, given together in place of Links, ForwardTo and
	// BroadcastTo, make an addressed message: one that any endpoint of a
	// type in Src may send to any endpoint of a type in Dst (a request to
	// one endpoint, an event to one or to every endpoint of the type),
	// however many hops apart (link.RequestTo, fabric.Request). Its links
	// are derived from the routes between them (see Route).
	Src, Dst []Endpoint
	// Schema, if set, is a hand-written JSON Schema for the request or
	// event payload, replacing the one generated from the Go type.
	Schema string
	// ResponseSchema, if set, replaces the generated schema of a
	// request's response.
	ResponseSchema string
}

// Message is a message's definition, in any of its forms: *Request,
// *Event or *Definition. (A message as it travels on a link, with its
// payload, is a link.Envelope.)
type Message interface {
	Def() *Definition
}

// Definition is everything the fabric knows about one message type. It is
// immutable once defined and safe for concurrent use.
type Definition struct {
	name        string
	description string
	kind        Kind
	links       []Direction
	permission  string
	forwardTo   Endpoint
	broadcastTo Endpoint
	src, dst    []Endpoint // an addressed message's; nil otherwise
	payload     *Schema
	response    *Schema // requests only

	// The Go types the message was defined with (nil for a Definition
	// made otherwise), and their checks as values (value.go); nil: they
	// travel as JSON.
	payloadType, responseType   reflect.Type
	payloadValue, responseValue *check.Value
}

// Def returns d itself, so that *Definition is a Message.
func (d *Definition) Def() *Definition { return d }

// Name returns the message type, e.g. "start_instance".
func (d *Definition) Name() string { return d.name }

// Plugin returns the plugin part of a namespaced name, or "" for a core message.
func (d *Definition) Plugin() string {
	plugin, _, found := strings.Cut(d.name, ":")
	if !found {
		return ""
	}
	return plugin
}

// Description returns the one-line description given at definition.
func (d *Definition) Description() string { return d.description }

// Kind returns KindRequest or KindEvent.
func (d *Definition) Kind() Kind { return d.kind }

// Links returns the directions the message is valid on, in the order given.
func (d *Definition) Links() []Direction { return slices.Clone(d.links) }

// Addressed reports whether the message was defined with Src and Dst: it
// may be sent to an address (link.RequestTo) rather than only to the peer
// of a link.
func (d *Definition) Addressed() bool { return d.src != nil }

// Src returns the endpoint types an addressed message may be sent from
// (nil for another message).
func (d *Definition) Src() []Endpoint { return slices.Clone(d.src) }

// Dst returns the endpoint types an addressed message may be sent to
// (nil for another message).
func (d *Definition) Dst() []Endpoint { return slices.Clone(d.dst) }

// Allows reports whether an addressed message may be sent by an endpoint
// of type from to one of type to.
func (d *Definition) Allows(from, to Endpoint) bool {
	return slices.Contains(d.src, from) && slices.Contains(d.dst, to)
}

// ValidOn reports whether the message may be sent in direction dir.
func (d *Definition) ValidOn(dir Direction) bool { return slices.Contains(d.links, dir) }

// Permission returns the permission a control needs to send this message
// to the master, Unrestricted, or "" when the message is not valid on
// control-master.
func (d *Definition) Permission() string { return d.permission }

// ForwardTo returns Instance, Master or 0.
func (d *Definition) ForwardTo() Endpoint { return d.forwardTo }

// BroadcastTo returns Instance or 0.
func (d *Definition) BroadcastTo() Endpoint { return d.broadcastTo }

// PayloadSchema returns the schema of the request or event payload.
func (d *Definition) PayloadSchema() *Schema { return d.payload }

// ResponseSchema returns the schema of a request's response, or nil for an event.
func (d *Definition) ResponseSchema() *Schema { return d.response }

// ValidatePayload checks a request's or event's payload against its schema.
// A failure is a *ValidationError naming the message and the field.
func (d *Definition) ValidatePayload(data []byte) error {
	return d.validate(d.payload, d.kind.String(), data)
}

// ValidateResponse checks a request's response payload against its schema.
// A failure is a *ValidationError naming the message and the field.
func (d *Definition) ValidateResponse(data []byte) error {
	if d.response == nil {
		return &ValidationError{Message: d.name, Part: "response", Reason: "an event has no response"}
	}
	return d.validate(d.response, "response", data)
}

func (d *Definition) validate(s *Schema, part string, data []byte) error {
	if err := s.Validate(data); err != nil {
		ve := err.(*ValidationError)
		ve.Message, ve.Part = d.name, part
		return ve
	}
	return nil
}

// Request is a request message whose request payload is Req and whose
// response payload is Resp. Senders and handlers use it through the link
// package; its encoders are for anything else that needs the wire form.
type Request[Req, Resp any] struct {
	*Definition
}

// Def returns the request's definition; nil for a nil *Request.
func (r *Request[Req, Resp]) Def() *Definition {
	if r == nil {
		return nil
	}
	return r.Definition
}

// Event is an event message whose payload is T.
type Event[T any] struct {
	*Definition
}

// Def returns the event's definition; nil for a nil *Event.
func (e *Event[T]) Def() *Definition {
	if e == nil {
		return nil
	}
	return e.Definition
}

// NewRequest defines a request. Every mistake in spec, or a Go type that has
// no JSON Schema, is an error that names the message and matches
// ErrDefinition.
func NewRequest[Req, Resp any](spec Spec) (*Request[Req, Resp], error) {
	d, err := define(spec, KindRequest, reflect.TypeFor[Req](), reflect.TypeFor[Resp]())
	if err != nil {
		return nil, err
	}
	return &Request[Req, Resp]{d}, nil
}

// NewEvent defines an event. Every mistake in spec, or a Go type that has no
// JSON Schema, is an error that names the message and matches ErrDefinition.
func NewEvent[T any](spec Spec) (*Event[T], error) {
	d, err := define(spec, KindEvent, reflect.TypeFor[T](), nil)
	if err != nil {
		return nil, err
	}
	return &Event[T]{d}, nil
}

// MustRequest is NewRequest for package-level definitions: it panics on a
// definition error, so a mistake stops the program as it starts.
func MustRequest[Req, Resp any](spec Spec) *Request[Req, Resp] {
	r, err := NewRequest[Req, Resp](spec)
	if err != nil {
		panic(err)
	}
	return r
}

// MustEvent is NewEvent for package-level definitions: it panics on a
// definition error, so a mistake stops the program as it starts.
func MustEvent[T any](spec Spec) *Event[T] {
	e, err := NewEvent[T](spec)
	if err != nil {
		panic(err)
	}
	return e
}

// EncodeRequest returns the wire form of req, checked against the schema.
func (r *Request[Req, Resp]) EncodeRequest(req Req) ([]byte, error) {
	return encode(r.Definition, r.payload, "request", req)
}

// DecodeRequest checks data against the request schema and decodes it.
func (r *Request[Req, Resp]) DecodeRequest(data []byte) (Req, error) {
	var req Req
	return req, decode(r.Definition, r.payload, "request", data, &req)
}

// EncodeResponse returns the wire form of resp, checked against the schema.
func (r *Request[Req, Resp]) EncodeResponse(resp Resp) ([]byte, error) {
	return encode(r.Definition, r.response, "response", resp)
}

// DecodeResponse checks data against the response schema and decodes it.
func (r *Request[Req, Resp]) DecodeResponse(data []byte) (Resp, error) {
	var resp Resp
	return resp, decode(r.Definition, r.response, "response", data, &resp)
}

// Encode returns the wire form of ev, checked against the schema.
func (e *Event[T]) Encode(ev T) ([]byte, error) {
	return encode(e.Definition, e.payload, "event", ev)
}

// Decode checks data against the event schema and decodes it.
func (e *Event[T]) Decode(data []byte) (T, error) {
	var ev T
	return ev, decode(e.Definition, e.payload, "event", data, &ev)
}

// encoder writes JSON as encoding/json does, without escaping <, > and &
// (payloads are not HTML); pooled, since building one allocates.
type encoder struct {
	buf bytes.Buffer
	enc *json.Encoder
}

var encoders = sync.Pool{New: func() any {
	e := &encoder{}
	e.enc = json.NewEncoder(&e.buf)
	e.enc.SetEscapeHTML(false)
	return e
}}

func encode(d *Definition, s *Schema, part string, v any) ([]byte, error) {
	e := encoders.Get().(*encoder)
	e.buf.Reset()
	err := e.enc.Encode(v)
	data := bytes.Clone(bytes.TrimSuffix(e.buf.Bytes(), []byte("\n")))
	if e.buf.Cap() <= 64<<10 {
		encoders.Put(e) // a large buffer is left to the collector
	}
	if err != nil {
		return nil, &ValidationError{Message: d.name, Part: part, Reason: "cannot encode: " + err.Error()}
	}
	if err := d.validate(s, part, data); err != nil {
		return nil, err
	}
	return data, nil
}

func decode(d *Definition, s *Schema, part string, data []byte, v any) error {
	if err := d.validate(s, part, data); err != nil {
		return err
	}
	return unmarshal(d, part, data, v)
}

// unmarshal decodes a payload that has already passed validation into v.
// Validation has checked the shape, so a failure here is a value that the
// schema allows but the Go type cannot hold: a number out of the Go type's
// range, or written with a fraction or exponent (JSON Schema counts 1.0 as
// an integer; encoding/json will not put it in an int). It is reported as a
// *ValidationError like any other bad payload, whose Field points at the
// value.
func unmarshal(d *Definition, part string, data []byte, v any) error {
	// encoding/json/v2's decoder (go-json-experiment, which the schema
	// library already uses) is three times faster than v1's, allocates
	// once, and says where in the document a value would not fit.
	if err := jsonv2.Unmarshal(data, v); err != nil {
		field := ""
		var se *jsonv2.SemanticError
		if errors.As(err, &se) {
			field = string(se.JSONPointer)
		}
		return &ValidationError{Message: d.name, Part: part, Field: field, Reason: "cannot decode: " + err.Error()}
	}
	return nil
}

var (
	namePattern       = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)
	permissionPattern = regexp.MustCompile(`^[a-z][a-z0-9_]*([.:][a-z][a-z0-9_]*)*$`)
)

// define checks a spec and compiles its schemas. Its errors begin with the
// message's name so a plugin author can find the faulty definition.
func define(spec Spec, kind Kind, payloadType, responseType reflect.Type) (*Definition, error) {
	fail := func(format string, args ...any) error {
		return fmt.Errorf("%w: message %q: %s", ErrDefinition, spec.Name, fmt.Sprintf(format, args...))
	}
	if err := checkName(spec.Name); err != nil {
		return nil, fail("%v", err)
	}
	d := &Definition{
		name:        spec.Name,
		description: spec.Description,
		kind:        kind,
		permission:  spec.Permission,
		forwardTo:   spec.ForwardTo,
		broadcastTo: spec.BroadcastTo,
	}
	links := spec.Links
	if spec.Src != nil || spec.Dst != nil {
		var err error
		if links, err = d.address(spec); err != nil {
			return nil, fail("%v", err)
		}
	}
	if len(links) == 0 {
		return nil, fail("no links given; a message must be valid on at least one")
	}
	for _, dir := range links {
		if !dir.Valid() {
			return nil, fail("link %s does not join two endpoint types (want one such as ControlToMaster)", dir)
		}
		if d.ValidOn(dir) {
			return nil, fail("link %s is listed twice", dir)
		}
		d.links = append(d.links, dir)
	}
	switch spec.ForwardTo {
	case 0, Instance, Master:
	default:
		return nil, fail("forwardTo %s is not supported (want instance or master)", spec.ForwardTo)
	}
	switch {
	case spec.BroadcastTo == 0:
	case spec.BroadcastTo != Instance:
		return nil, fail("broadcastTo %s is not supported (want instance)", spec.BroadcastTo)
	case kind != KindEvent:
		return nil, fail("broadcastTo applies to events only")
	}
	if err := d.checkRouting(); err != nil {
		return nil, fail("%v", err)
	}
	switch needs := d.ValidOn(ControlToMaster); {
	case needs && spec.Permission == "":
		return nil, fail("%s valid on control-master must declare a permission (messages.Unrestricted for none)", map[Kind]string{KindRequest: "a request", KindEvent: "an event"}[kind])
	case !needs && spec.Permission != "":
		return nil, fail("permission %q is only for messages valid on control-master", spec.Permission)
	case needs && spec.Permission != Unrestricted && !permissionPattern.MatchString(spec.Permission):
		return nil, fail("permission %q is not dotted snake_case, e.g. core.instance.start", spec.Permission)
	}

	var err error
	if d.payload, err = payloadSchema(d, spec.Schema, payloadType); err != nil {
		return nil, fail("%s schema: %v", kind, err)
	}
	if kind == KindRequest {
		if d.response, err = buildSchema(spec.ResponseSchema, responseType); err != nil {
			return nil, fail("response schema: %v", err)
		}
	}
	d.compileValues(payloadType, responseType)
	return d, nil
}

// address checks an addressed message's Src and Dst, keeps them, and
// returns the links of every route between them.
func (d *Definition) address(spec Spec) ([]Direction, error) {
	switch {
	case len(spec.Links) > 0 || spec.ForwardTo != 0 || spec.BroadcastTo != 0:
		return nil, errors.New("Src and Dst replace Links, ForwardTo and BroadcastTo: give one form or the other")
	case len(spec.Src) == 0 || len(spec.Dst) == 0:
		return nil, errors.New("an addressed message needs both Src and Dst")
	}
	var links []Direction
	for _, list := range [][]Endpoint{spec.Src, spec.Dst} {
		for i, e := range list {
			if !e.Valid() || slices.Contains(list[:i], e) {
				return nil, fmt.Errorf("Src and Dst list endpoint types, each once; %s is not one or is listed twice", e)
			}
		}
	}
	d.src, d.dst = slices.Clone(spec.Src), slices.Clone(spec.Dst)
	for _, s := range d.src {
		for _, t := range d.dst {
			for _, dir := range Route(s, t) {
				if !slices.Contains(links, dir) {
					links = append(links, dir)
				}
			}
		}
	}
	return links, nil
}

// Route returns the hops an addressed message takes from an endpoint of
// type src to one of type dst (docs/protocol.md, "Addressed messages"):
// from a slave to a slave, the direct link between them; everything else
// by way of the master, which alone knows where every endpoint is, checks
// every claim of a source, and holds a link to every slave and control. A
// slave shortens the route to, and between, its own instances: those hops
// are among these.
func Route(src, dst Endpoint) []Direction {
	if src == Slave && dst == Slave {
		return []Direction{SlaveToSlave}
	}
	up := map[Endpoint][]Endpoint{Master: {Master}, Slave: {Slave, Master}, Instance: {Instance, Slave, Master}, Control: {Control, Master}}
	down := map[Endpoint][]Endpoint{Master: nil, Slave: {Slave}, Instance: {Slave, Instance}, Control: {Control}}
	path := append(slices.Clone(up[src]), down[dst]...)
	var dirs []Direction
	for i := 1; i < len(path); i++ {
		dirs = append(dirs, Direction{Source: path[i-1], Target: path[i]})
	}
	return dirs
}

func checkName(name string) error {
	plugin, typ, namespaced := strings.Cut(name, ":")
	switch {
	case name == "":
		return errors.New("the name is empty")
	case namespaced && (!namePattern.MatchString(plugin) || !namePattern.MatchString(typ)):
		return errors.New(`a plugin message is named "plugin_name:type", both parts snake_case`)
	case !namespaced && !namePattern.MatchString(name):
		return errors.New("the name must be snake_case (a-z, 0-9, _), starting with a letter")
	}
	return nil
}

// checkRouting makes sure a forwarded or broadcast message is declared on
// every hop it will travel, so routing cannot fail for want of a link.
func (d *Definition) checkRouting() error {
	need := func(src, dst Endpoint, why string) error {
		if !d.ValidOn(Direction{src, dst}) {
			return fmt.Errorf("%s, so it must be valid on %s-%s", why, src, dst)
		}
		return nil
	}
	for _, dir := range d.links {
		var err error
		switch {
		case d.forwardTo == Instance && dir.Target == Master:
			err = need(Master, Slave, "it is forwarded to an instance from the master")
		case d.forwardTo == Instance && dir.Target == Slave:
			err = need(Slave, Instance, "it is forwarded to an instance from a slave")
		case d.forwardTo == Master && dir.Target == Slave:
			err = need(Slave, Master, "it is forwarded to the master from a slave")
		case d.broadcastTo == Instance && dir.Target == Master:
			err = need(Master, Slave, "it is broadcast to instances from the master")
		}
		if err != nil {
			return err
		}
	}
	if d.broadcastTo == Instance {
		return need(Slave, Instance, "it is broadcast to instances")
	}
	return nil
}

// payloadSchema builds the request or event schema; a message forwarded to
// an instance must carry an integer instance_id, in the Go type and in the
// schema.
func payloadSchema(d *Definition, handWritten string, t reflect.Type) (*Schema, error) {
	if d.forwardTo != Instance {
		return buildSchema(handWritten, t)
	}
	if !hasIntegerField(t, InstanceIDField) {
		return nil, fmt.Errorf("it is forwarded to an instance, so %s needs an integer field tagged json:%q", t, InstanceIDField)
	}
	doc := []byte(handWritten)
	if handWritten == "" {
		var err error
		if doc, err = generateSchema(t); err != nil {
			return nil, err
		}
	}
	doc, err := requireInstanceID(doc)
	if err != nil {
		return nil, err
	}
	return compileSchema(doc)
}

func buildSchema(handWritten string, t reflect.Type) (*Schema, error) {
	if handWritten != "" {
		return compileSchema([]byte(handWritten))
	}
	doc, err := generateSchema(t)
	if err != nil {
		return nil, err
	}
	return compileSchema(doc)
}

func hasIntegerField(t reflect.Type, name string) bool {
	if t.Kind() != reflect.Struct {
		return false
	}
	for _, f := range reflect.VisibleFields(t) {
		tag, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if tag == name && f.IsExported() {
			switch f.Type.Kind() {
			case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
				reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
				return true
			}
		}
	}
	return false
}

// requireInstanceID makes instance_id a required integer of an object
// schema, as the original layer did for forwarded messages, at most
// MaxInstanceID, keeping any other constraint the schema puts on it.
func requireInstanceID(doc []byte) ([]byte, error) {
	var s map[string]any
	d := json.NewDecoder(bytes.NewReader(doc))
	d.UseNumber()
	if err := d.Decode(&s); err != nil {
		return nil, fmt.Errorf("schema is not a JSON object: %w", err)
	}
	props, _ := s["properties"].(map[string]any)
	if props == nil {
		props = map[string]any{}
	}
	prop, _ := props[InstanceIDField].(map[string]any)
	if prop == nil {
		prop = map[string]any{}
	}
	prop["type"] = "integer"
	if m, ok := prop["maximum"].(json.Number); !ok || m.String() == "" || !withinMaxInstanceID(m) {
		prop["maximum"] = MaxInstanceID
	}
	props[InstanceIDField] = prop
	s["properties"] = props
	req, _ := s["required"].([]any)
	if !slices.Contains(req, any(InstanceIDField)) {
		req = append(req, InstanceIDField)
	}
	s["required"] = req
	return json.Marshal(s)
}

// withinMaxInstanceID reports whether a schema's maximum n is at most
// MaxInstanceID already.
func withinMaxInstanceID(n json.Number) bool {
	f, err := n.Float64()
	return err == nil && f <= MaxInstanceID
}
