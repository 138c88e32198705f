// Package check is the messages package's fast path: it checks a JSON
// payload against the schemas that the fabric's messages use, in one pass
// over the bytes and without allocating (Node), and a Go value of a
// message's type against the same schema without encoding it (Value). It
// answers only when it is certain (Valid or Invalid); Undecided leaves the
// decision, and the explanation of a failure, to the JSON Schema library.
// It is internal: package messages is its one user, and what it decides
// reaches others only through messages' definitions.
package check
