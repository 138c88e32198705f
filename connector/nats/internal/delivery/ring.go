package delivery

// ring is a queue that grows as needed: pushing at the back and dropping
// from the front move nothing, and it gives its memory back when empty.
type ring[T any] struct {
	buf  []T // len(buf) is 0 or a power of two
	head int
	n    int
}

func (r *ring[T]) len() int { return r.n }

// at returns the i'th element from the front.
func (r *ring[T]) at(i int) T { return r.buf[(r.head+i)&(len(r.buf)-1)] }

// ptr returns the i'th element from the front, to update in place.
func (r *ring[T]) ptr(i int) *T { return &r.buf[(r.head+i)&(len(r.buf)-1)] }

func (r *ring[T]) push(v T) {
	if r.n == len(r.buf) {
		grown := make([]T, max(16, 2*len(r.buf)))
		for i := range r.n {
			grown[i] = r.at(i)
		}
		r.buf, r.head = grown, 0
	}
	r.buf[(r.head+r.n)&(len(r.buf)-1)] = v
	r.n++
}

// drop removes the k front elements; k may not exceed len.
func (r *ring[T]) drop(k int) {
	var zero T
	for range k {
		r.buf[r.head] = zero
		r.head = (r.head + 1) & (len(r.buf) - 1)
	}
	r.n -= k
	if r.n == 0 && len(r.buf) > 1024 {
		*r = ring[T]{} // give a backlog's memory back
	}
}

// clear removes every element, giving the memory back.
func (r *ring[T]) clear() { *r = ring[T]{} }
