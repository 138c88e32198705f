// Package codec is what the link package needs of a message's definition
// beyond the messages package's API: whether a payload held as a Go value
// passes the message's schema and may travel as that value, its JSON form,
// and the decoding of a payload already checked. Package messages installs
// the functions as it initialises (before any package that imports it
// runs), and nothing else sets them; they are safe for concurrent use.
package codec

// Definition is a *messages.Definition; this package cannot name it, since
// messages imports it to install the functions.
type Definition interface{ Name() string }

var (
	// ValueOK reports whether v, a payload of def as a Go value (with
	// response, the response of a request), is of the Go type def was
	// defined with, can travel as that value (it shares no memory) and
	// certainly passes the schema. False means: send it as JSON, whose
	// check decides and explains a failure.
	ValueOK func(def Definition, response bool, v any) bool
	// Marshal returns the JSON form of v, a payload of def as a Go value
	// (with response, the response of a request), checked against the
	// schema; a failure is a *messages.ValidationError.
	Marshal func(def Definition, response bool, v any) ([]byte, error)
	// Unmarshal decodes data, a payload of def that has passed its schema
	// (part says which: "request", "response" or "event"), into v. A value
	// the schema allows but v's type cannot hold is a
	// *messages.ValidationError naming the field.
	Unmarshal func(def Definition, part string, data []byte, v any) error
)
