package delivery

import "fmt"

// SenderState describes a Sender's broadcast streams, for a
// simulation's trace: per broadcast kept, how many receivers owe it; per
// receiver, where it starts and what it has acknowledged.
func SenderState[E any](s *Sender[E]) string {
	out := ""
	for _, bs := range s.streams {
		out += fmt.Sprintf("%s next=%d floor=%d:", bs.typ, bs.next, bs.floor())
		for i := range bs.pending.len() {
			out += fmt.Sprintf(" %d", bs.pending.at(i).owed)
		}
		for _, l := range s.links {
			out += fmt.Sprintf(" [%s recv=%v parked=%v bstart=%d backed=%d]", l.key, l.receiver, l.parked, l.bstart, l.backed)
		}
	}
	return out
}
