package messages

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/kaptinlin/jsonschema"

	"github.com/linkfabric/linkfabric/messages/internal/check"
)

// ErrInvalidPayload is matched (with errors.Is) by every *ValidationError.
var ErrInvalidPayload = errors.New("messages: invalid payload")

// ValidationError reports a payload that does not match its message's
// schema. It names the message, the part of it (request, response or event)
// and the offending field.
type ValidationError struct {
	Message string // message type name, e.g. "start_instance"
	Part    string // "request", "response" or "event"
	Field   string // JSON pointer to the offending value; "" is the whole payload
	Reason  string // what is wrong with it
}

// Error returns "invalid <message> <part>: <field>: <reason>".
func (e *ValidationError) Error() string {
	field := e.Field
	if field == "" {
		field = "payload"
	}
	return fmt.Sprintf("invalid %s %s: %s: %s", e.Message, e.Part, field, e.Reason)
}

// Is reports whether target is ErrInvalidPayload.
func (e *ValidationError) Is(target error) bool { return target == ErrInvalidPayload }

// Schema is a compiled JSON Schema for one payload of one message. It is
// immutable and safe for concurrent use.
type Schema struct {
	raw      json.RawMessage
	compiled *jsonschema.Schema
	fast     *check.Node // nil: the schema uses keywords only the library checks
}

// compileSchema compiles a JSON Schema document once. Schemas are Draft-07
// (the newest dialect whose meta-schema the validator carries, so a schema
// can be checked without fetching anything). References to other
// documents are refused: a message's schema must be self-contained, and
// fetching schemas over the network at start-up is not something a cluster
// node should ever do.
func compileSchema(doc []byte) (*Schema, error) {
	var probe any
	if err := json.Unmarshal(doc, &probe); err != nil {
		return nil, fmt.Errorf("schema is not valid JSON: %w", err)
	}
	if _, ok := probe.(map[string]any); !ok {
		if b, isBool := probe.(bool); !isBool || !b {
			return nil, errors.New("schema must be a JSON object")
		}
	}
	c := jsonschema.NewCompiler().SetDefaultDialect(jsonschema.Draft7).SetAssertFormat(true)
	for scheme := range c.Loaders {
		delete(c.Loaders, scheme)
	}
	res, err := c.ValidateSchema(doc)
	if err != nil {
		return nil, fmt.Errorf("schema cannot be checked: %w", err)
	}
	if !res.IsValid() {
		field, reason := firstError(res)
		return nil, fmt.Errorf("schema is not a valid JSON Schema: %s: %s", orRoot(field), reason)
	}
	compiled, err := c.Compile(doc)
	if err != nil {
		return nil, fmt.Errorf("schema does not compile: %w", err)
	}
	if refs := compiled.UnresolvedReferenceURIs(); len(refs) > 0 {
		return nil, fmt.Errorf("schema refers to %s, which it does not contain; a message's schema must be self-contained", strings.Join(refs, ", "))
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, doc); err != nil {
		return nil, fmt.Errorf("schema is not valid JSON: %w", err)
	}
	return &Schema{raw: buf.Bytes(), compiled: compiled, fast: check.Compile(buf.Bytes())}, nil
}

// JSON returns the schema document. The caller must not modify it.
func (s *Schema) JSON() json.RawMessage { return s.raw }

// Validate checks a JSON document against the schema. It returns nil or a
// *ValidationError with Message and Part left empty for the caller to fill.
func (s *Schema) Validate(data []byte) error {
	if s.fast != nil && s.fast.Check(data) == check.Valid {
		return nil
	}
	// Invalid, or beyond the fast path: the library decides, and says why.
	res := s.compiled.ValidateJSON(data)
	if res.IsValid() {
		return nil
	}
	field, reason := firstError(res)
	return &ValidationError{Field: field, Reason: reason}
}

// issue is one failed keyword at one place in the validated document.
type issue struct {
	path, keyword, code, message string
}

// firstError picks the one failure of an evaluation that best tells a person
// what to fix: a missing required field first, then an unexpected field,
// then the deepest failure. Summary failures ("property x does not match")
// are skipped in favour of the failure they summarise.
func firstError(res *jsonschema.EvaluationResult) (field, reason string) {
	var all []issue
	collectIssues(res, "", &all)
	// "Additional property k does not match" on an object only summarises
	// what is wrong beneath /k when the object allows other properties.
	var issues []issue
	for _, i := range all {
		if i.keyword == "additionalProperties" && slices.ContainsFunc(all, func(j issue) bool {
			return strings.HasPrefix(j.path, i.path+"/")
		}) {
			continue
		}
		issues = append(issues, i)
	}
	if len(issues) == 0 {
		return "", "does not match the schema"
	}
	rank := func(i issue) int {
		switch {
		case i.code == "invalid_json":
			return 0 // nothing else is meaningful
		case i.keyword == "required":
			return 1
		case i.keyword == "additionalProperties":
			return 2
		}
		return 3
	}
	sort.SliceStable(issues, func(a, b int) bool {
		ra, rb := rank(issues[a]), rank(issues[b])
		if ra != rb {
			return ra < rb
		}
		da, db := strings.Count(issues[a].path, "/"), strings.Count(issues[b].path, "/")
		if da != db {
			return da > db
		}
		if issues[a].path != issues[b].path {
			return issues[a].path < issues[b].path
		}
		return issues[a].keyword < issues[b].keyword
	})
	best := issues[0]
	return best.path, best.message
}

// summaryKeywords fail only because something beneath them failed.
var summaryKeywords = map[string]bool{
	"properties": true, "items": true, "prefixItems": true, "allOf": true,
	"patternProperties": true, "dependentSchemas": true, "contains": true,
	"unevaluatedProperties": true, "unevaluatedItems": true,
	"schema": true, // a false schema under additionalProperties; its parent says which property
}

func collectIssues(res *jsonschema.EvaluationResult, base string, out *[]issue) {
	if res.Valid {
		return // an anyOf that passed keeps its failed branches; they are not errors
	}
	path := base + res.InstanceLocation
	for kw, e := range res.Errors {
		if summaryKeywords[kw] {
			continue
		}
		*out = append(*out, issue{path: path, keyword: kw, code: e.Code, message: e.Error()})
	}
	for _, d := range res.Details {
		collectIssues(d, path, out)
	}
}

func orRoot(field string) string {
	if field == "" {
		return "/"
	}
	return field
}
