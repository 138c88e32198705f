package soak

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/messages"
)

// stateLog is what the master acknowledged of the changes the soak's
// control made to its state (Config.StateRate): instances created, and
// players banned. A change whose request failed may or may not have been
// made, and is not owed.
type stateLog struct {
	mu        sync.Mutex
	instances map[int64]string // id -> name, acknowledged
	bans      []string         // acknowledged
	failed    int              // changes whose request failed
}

// changeState creates an instance, then bans a player, in turn, at
// StateRate, until traffic stops.
func (s *Soak) changeState() {
	defer s.traffic.Done()
	tick := time.NewTicker(every(s.cfg.StateRate))
	defer tick.Stop()
	stopped := s.trafficStopped()
	for n := 1; ; n++ {
		select {
		case <-stopped:
			return
		case <-tick.C:
		}
		ctl := s.currentControl()
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.Timing.RequestTimeout)
		var err error
		if n%2 == 1 {
			name := fmt.Sprintf("soak-state-%d", n)
			var r messages.InstanceRef
			if r, err = link.Request(ctx, ctl.Link(), messages.CreateInstance, messages.NewInstance{Name: name}); err == nil {
				s.state.mu.Lock()
				if s.state.instances == nil {
					s.state.instances = map[int64]string{}
				}
				s.state.instances[r.InstanceID] = name
				s.state.mu.Unlock()
			}
		} else {
			name := fmt.Sprintf("soak-p%d", n)
			if _, err = link.Request(ctx, ctl.Link(), messages.SetPlayerBanned, messages.Ban{Name: name, Banned: true, Reason: "soak"}); err == nil {
				s.state.mu.Lock()
				s.state.bans = append(s.state.bans, name)
				s.state.mu.Unlock()
			}
		}
		cancel()
		if err != nil {
			s.state.mu.Lock()
			s.state.failed++
			s.state.mu.Unlock()
		}
	}
}

// StateReport compares what the master acknowledged with what the active
// master now holds.
type StateReport struct {
	// Acknowledged counts the changes the master acknowledged; Failed those
	// whose request ended with an error (made or not).
	Acknowledged int `json:"acknowledged"`
	Failed       int `json:"failed"`
	// Missing lists acknowledged changes that the master does not hold:
	// each is a change lost.
	Missing []string `json:"missing,omitempty"`
}

// CheckState asks the active master for its instances and bans, and
// reports the acknowledged changes it lacks.
func (s *Soak) CheckState(ctx context.Context) (StateReport, error) {
	s.state.mu.Lock()
	instances := make(map[int64]string, len(s.state.instances))
	for id, name := range s.state.instances {
		instances[id] = name
	}
	bans := slices.Clone(s.state.bans)
	r := StateReport{Acknowledged: len(instances) + len(bans), Failed: s.state.failed}
	s.state.mu.Unlock()
	ctl := s.currentControl()
	il, err := link.Request(ctx, ctl.Link(), messages.ListInstances, messages.Empty{})
	if err != nil {
		return r, err
	}
	bl, err := link.Request(ctx, ctl.Link(), messages.ListBannedPlayers, messages.Empty{})
	if err != nil {
		return r, err
	}
	held := map[int64]string{}
	for _, i := range il.Instances {
		held[i.ID] = i.Name
	}
	for id, name := range instances {
		if held[id] != name {
			r.Missing = append(r.Missing, fmt.Sprintf("instance %d (%s)", id, name))
		}
	}
	banned := map[string]bool{}
	for _, b := range bl.Bans {
		banned[b.Name] = true
	}
	for _, name := range bans {
		if !banned[name] {
			r.Missing = append(r.Missing, "ban of "+name)
		}
	}
	slices.Sort(r.Missing)
	return r, nil
}
