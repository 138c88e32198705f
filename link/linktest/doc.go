// Package linktest is the behaviour every connector owes a link, written
// once and run over any connector, after Watermill's tests.TestPubSub. A
// connector's own test makes pairs of links that the connector joins, and
// Run checks, over fresh pairs, what a link relies on: request and
// response both ways (typed, and 256 KiB payloads), handlers' errors
// arriving with their code and text, events in order, invalid payloads
// refused without harm, timeouts, closing from either side (pending
// requests end with link.ErrSessionLost), graceful disconnects,
// concurrent requests, and handlers declared link.NonBlocking.
//
//	func TestConformance(t *testing.T) {
//		linktest.Run(t, newPair, linktest.Features{})
//	}
//
// newPair (a NewPair) makes two links, A at AddrA (a slave, the side that
// dials) and B at AddrB (the master, the side that accepts), over a new
// connection of the connector under test, with the catalog it is given;
// it calls the setup functions it is given on A and B before starting
// them, and closes both, and whatever carries them, when the test ends.
// connector/virtual and connector/nats run the suite so; the example
// runs it over a connector of its own.
//
// The package is for tests: it imports package testing.
package linktest
