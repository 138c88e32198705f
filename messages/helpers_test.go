package messages_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/linkfabric/linkfabric/messages"
)

// defineFunc defines a message from a spec with some fixed Go types and
// returns only the error, so that tables can mix requests and events.
type defineFunc func(messages.Spec) error

func event[T any]() defineFunc {
	return func(s messages.Spec) error {
		_, err := messages.NewEvent[T](s)
		return err
	}
}

func request[Req, Resp any]() defineFunc {
	return func(s messages.Spec) error {
		_, err := messages.NewRequest[Req, Resp](s)
		return err
	}
}

// mustPanic runs f and returns what it panicked with, failing the test if it
// did not panic.
func mustPanic(t *testing.T, f func()) (v any) {
	t.Helper()
	defer func() {
		v = recover()
		if v == nil {
			t.Fatal("did not panic")
		}
	}()
	f()
	return nil
}

// requireDefinitionError checks that err is a definition error naming the
// message and mentioning reason.
func requireDefinitionError(t *testing.T, err error, name, reason string) {
	t.Helper()
	if err == nil {
		t.Fatalf("defined without error; want an error about %q", reason)
	}
	if !errors.Is(err, messages.ErrDefinition) {
		t.Errorf("errors.Is(err, ErrDefinition) = false; err = %v", err)
	}
	if !strings.Contains(err.Error(), strconv.Quote(name)) {
		t.Errorf("error %q does not name message %q", err, name)
	}
	if !strings.Contains(err.Error(), reason) {
		t.Errorf("error %q does not mention %q", err, reason)
	}
}

// requireValidationError checks that err is a *ValidationError for message
// and part, and returns it.
func requireValidationError(t *testing.T, err error, message, part string) *messages.ValidationError {
	t.Helper()
	if err == nil {
		t.Fatal("no error; want a *messages.ValidationError")
	}
	var ve *messages.ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("error %v (%T) is not a *messages.ValidationError", err, err)
	}
	if !errors.Is(err, messages.ErrInvalidPayload) {
		t.Errorf("errors.Is(err, ErrInvalidPayload) = false for %v", err)
	}
	if errors.Is(err, messages.ErrDefinition) {
		t.Errorf("a payload error matches ErrDefinition: %v", err)
	}
	if ve.Message != message || ve.Part != part {
		t.Errorf("Message, Part = %q, %q; want %q, %q", ve.Message, ve.Part, message, part)
	}
	if ve.Reason == "" {
		t.Errorf("empty Reason in %#v", ve)
	}
	if !strings.Contains(ve.Error(), message) {
		t.Errorf("Error() %q does not name message %q", ve.Error(), message)
	}
	return ve
}

// canon returns a JSON document with object keys sorted and no spaces, so
// documents can be compared regardless of key order.
func canon(t *testing.T, doc []byte) string {
	t.Helper()
	d := json.NewDecoder(bytes.NewReader(doc))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		t.Fatalf("not JSON: %v: %s", err, doc)
	}
	out, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// property returns the canonical form of a property's schema in an object
// schema document.
func property(t *testing.T, schema []byte, name string) string {
	t.Helper()
	var s struct {
		Properties map[string]json.RawMessage `json:"properties"`
	}
	if err := json.Unmarshal(schema, &s); err != nil {
		t.Fatalf("schema is not an object: %v: %s", err, schema)
	}
	p, ok := s.Properties[name]
	if !ok {
		t.Fatalf("schema has no property %q: %s", name, schema)
	}
	return canon(t, p)
}

// newCatalog returns the catalog of core messages and plugins.
func newCatalog(t *testing.T, plugins ...messages.Plugin) *messages.Catalog {
	t.Helper()
	c, err := messages.NewCatalog(plugins...)
	if err != nil {
		t.Fatalf("NewCatalog: %v", err)
	}
	return c
}
