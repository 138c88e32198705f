// Package testkit holds the helpers that the project's tests share: waits
// for a condition with a deadline (WaitFor, Eventually, Recv), a context
// bounded by the test (Ctx), and checks of errors (NoErr, WantCode). No
// test sleeps to synchronise; each waits for what it needs, bounded.
package testkit

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/linkfabric/linkfabric/link"
)

// WaitFor polls cond every millisecond until it holds, and fails the test
// if it does not within timeout.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	poll(t, timeout, time.Millisecond, what, func() error {
		if cond() {
			return nil
		}
		return errNotYet
	})
}

// Eventually polls cond every 10ms until it returns nil, and fails the
// test with cond's last error if that takes longer than timeout: for
// conditions that can say what is still wrong.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	poll(t, timeout, 10*time.Millisecond, what, cond)
}

var errNotYet = errors.New("not yet")

func poll(t testing.TB, timeout, every time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			if err == errNotYet {
				t.Fatalf("timed out after %s waiting for %s", timeout, what)
			}
			t.Fatalf("timed out after %s waiting for %s: %v", timeout, what, err)
		}
		<-tick.C
	}
}

// Recv returns the next value from ch, failing the test after timeout.
func Recv[T any](t testing.TB, ch <-chan T, timeout time.Duration, what string) T {
	t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case v := <-ch:
		return v
	case <-timer.C:
		t.Fatalf("timed out after %s waiting for %s", timeout, what)
		panic("unreachable")
	}
}

// Ctx returns a context that ends after d, cancelled when the test ends.
func Ctx(t testing.TB, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// NoErr fails the test at once if err is not nil.
func NoErr(t testing.TB, err error, what string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: unexpected error: %v", what, err)
	}
}

// WantCode fails the test unless err is a *link.Error with code that
// errors.Is matches against the sentinel of that code, and returns it.
func WantCode(t testing.TB, err error, code link.Code) *link.Error {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want one with code %s", code)
	}
	var le *link.Error
	if !errors.As(err, &le) {
		t.Fatalf("got %T %v, want a *link.Error with code %s", err, err, code)
	}
	if le.Code != code {
		t.Fatalf("got code %s (%v), want %s", le.Code, err, code)
	}
	if !errors.Is(err, &link.Error{Code: code}) {
		t.Fatalf("errors.Is(%v, code %s) is false", err, code)
	}
	return le
}
