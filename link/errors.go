package link

import (
	"context"
	"errors"
	"fmt"
	"regexp"
)

// Code is a stable, machine-readable error code. Codes travel across the
// wire and across forwarding hops unchanged. The fabric's codes are listed
// here and in docs/protocol.md; applications may use codes of their own
// (lower-case, dotted or snake_case, such as "myplugin.not_ready").
type Code string

// The link's error codes.
const (
	// CodeInvalidMessage: the message's type is unknown, it is not valid on
	// the link in that direction, or its payload does not match its schema.
	CodeInvalidMessage Code = "invalid_message"
	// CodeNoHandler: the receiver has no handler for the request.
	CodeNoHandler Code = "no_handler"
	// CodePermissionDenied: the sender may not send this request.
	CodePermissionDenied Code = "permission_denied"
	// CodeSessionLost: the link closed before the request was answered.
	CodeSessionLost Code = "session_lost"
	// CodeTimeout: the request's deadline passed before it was answered.
	CodeTimeout Code = "timeout"
	// CodeInternal: the handler panicked or its response could not be sent.
	CodeInternal Code = "internal"
	// CodeHandlerError: the handler returned an error that carries no code.
	CodeHandlerError Code = "handler_error"
	// CodeUnavailable: the link is disconnecting and takes no new requests.
	CodeUnavailable Code = "unavailable"
	// CodeNotConnected: the peer is not connected to the transport.
	CodeNotConnected Code = "not_connected"
	// CodeTooLarge: the message is larger than the transport carries.
	CodeTooLarge Code = "too_large"
)

// Sentinel errors, one per code, for use with errors.Is. An *Error rebuilt
// from the wire matches the sentinel of its code.
var (
	ErrInvalidMessage   = &Error{Code: CodeInvalidMessage, Message: "invalid message"}
	ErrNoHandler        = &Error{Code: CodeNoHandler, Message: "no handler"}
	ErrPermissionDenied = &Error{Code: CodePermissionDenied, Message: "permission denied"}
	ErrSessionLost      = &Error{Code: CodeSessionLost, Message: "session lost"}
	ErrTimeout          = &Error{Code: CodeTimeout, Message: "request timed out"}
	ErrInternal         = &Error{Code: CodeInternal, Message: "internal error"}
	ErrHandlerError     = &Error{Code: CodeHandlerError, Message: "handler failed"}
	ErrUnavailable      = &Error{Code: CodeUnavailable, Message: "link is disconnecting"}
	ErrNotConnected     = &Error{Code: CodeNotConnected, Message: "peer not connected"}
	ErrTooLarge         = &Error{Code: CodeTooLarge, Message: "message too large"}
)

// Error is an error with a stable code: the form in which a request's
// failure reaches the requester, however many hops away the handler ran.
// A handler that returns an *Error (or wraps one) has its code and message
// delivered as they are; any other error arrives as CodeHandlerError with
// the error's text.
type Error struct {
	Code    Code
	Message string
	cause   error
}

// Errorf returns an *Error with the given code and a formatted message. An
// error wrapped with %w is kept for errors.Is and errors.As where the
// *Error is returned directly; a connector carries only the code and the
// text to the peer.
func Errorf(code Code, format string, args ...any) *Error {
	err := fmt.Errorf(format, args...)
	return &Error{Code: code, Message: err.Error(), cause: errors.Unwrap(err)}
}

// Error returns "<code>: <message>".
func (e *Error) Error() string { return string(e.Code) + ": " + e.Message }

// Is reports whether target is an *Error with the same code, so that
// errors.Is(err, link.ErrTimeout) holds for any timeout.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code
}

// Unwrap returns the error this one was made from, if any.
func (e *Error) Unwrap() error { return e.cause }

var codePattern = regexp.MustCompile(`^[a-z][a-z0-9_]*([.:][a-z][a-z0-9_]*)*$`)

// ValidCode reports whether c has the form of an error code.
func ValidCode(c Code) bool { return len(c) <= 64 && codePattern.MatchString(string(c)) }

// asError turns any error a handler returned into the *Error that goes on
// the wire.
func asError(err error) *Error {
	var e *Error
	if errors.As(err, &e) && ValidCode(e.Code) {
		if e.Message == "" {
			return &Error{Code: e.Code, Message: string(e.Code)}
		}
		return e
	}
	if errors.Is(err, context.DeadlineExceeded) {
		// A handler giving up at the request's deadline: the requester
		// must see ErrTimeout whichever of the two it notices first.
		return &Error{Code: CodeTimeout, Message: err.Error()}
	}
	return &Error{Code: CodeHandlerError, Message: err.Error()}
}
