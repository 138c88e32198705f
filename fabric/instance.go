package fabric

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/messages"
)

// Instance is what an application runs as one instance of the cluster,
// such as a game server. Its slave joins it with a virtual link while it
// runs: the slave starts it (start_instance), forwards it what the
// cluster asks of it, and stops it (stop_instance).
type Instance interface {
	// Attach attaches the instance's handlers to l, its side of the link
	// to its slave, before the link starts: a handler for every message a
	// slave sends an instance (start_instance, stop_instance,
	// send_command, banlist_update, and any plugin's). The fabric answers
	// prepare_master_disconnect and master_connection_event itself unless
	// Attach does. The instance keeps l to report what happens to it:
	// instance_started, instance_stopped, instance_output, player_event.
	Attach(l *link.Link)
}

// InstanceFactory makes the instance with the given id and name when its
// slave starts it. A stopped instance's link is closed; starting it again
// makes a new one.
type InstanceFactory func(id int64, name string) Instance

// SimulatedInstances makes simulated instances: stand-ins for a game
// server, for development and tests. A simulated instance starts and stops
// (reporting both and printing output as it does), answers commands, lets
// players join and leave, and kicks banned players:
//
//	/help               list the commands
//	/players            list the players online
//	/join NAME          a player joins (refused if banned)
//	/leave NAME         a player leaves
//	/say TEXT           print TEXT to the instance's output
//	/bans               list the bans the instance has received
func SimulatedInstances(id int64, name string) Instance {
	return &simulated{id: id, name: name, players: map[string]bool{}, bans: map[string]string{}}
}

type simulated struct {
	id   int64
	name string
	l    *link.Link

	mu      sync.Mutex
	running bool
	players map[string]bool
	bans    map[string]string
}

func (s *simulated) Attach(l *link.Link) {
	s.l = l
	link.HandleRequest(l, messages.StartInstance, s.start)
	link.HandleRequest(l, messages.StopInstance, s.stop)
	link.HandleRequest(l, messages.SendCommand, s.command)
	link.HandleEvent(l, messages.BanlistUpdate, s.ban)
	link.HandleEvent(l, messages.MasterConnectionEvent, func(ctx context.Context, ev messages.ConnectionEvent) error {
		return s.print(ctx, "info", "master connection: "+ev.Event)
	})
}

func (s *simulated) print(ctx context.Context, level, text string) error {
	return link.Emit(ctx, s.l, messages.InstanceOutput, messages.OutputLine{
		InstanceID: s.id, Time: time.Now().UnixMilli(), Level: level, Message: text,
	})
}

func (s *simulated) start(ctx context.Context, _ messages.InstanceRef) (messages.Empty, error) {
	s.mu.Lock()
	already := s.running
	s.running = true
	s.mu.Unlock()
	if already {
		return messages.Empty{}, link.Errorf(CodeConflict, "instance %d (%s) is already running", s.id, s.name)
	}
	_ = s.print(ctx, "info", fmt.Sprintf("starting instance %s", s.name))
	if err := link.Emit(ctx, s.l, messages.InstanceStarted, messages.InstanceRef{InstanceID: s.id}); err != nil {
		return messages.Empty{}, err
	}
	return messages.Empty{}, s.print(ctx, "info", fmt.Sprintf("instance %s is ready", s.name))
}

func (s *simulated) stop(ctx context.Context, _ messages.InstanceRef) (messages.Empty, error) {
	s.mu.Lock()
	was := s.running
	s.running = false
	players := sortedKeys(s.players)
	clear(s.players)
	s.mu.Unlock()
	if !was {
		return messages.Empty{}, notRunning(s.id, s.name)
	}
	for _, p := range players {
		_ = s.player(ctx, "leave", p)
	}
	_ = s.print(ctx, "info", fmt.Sprintf("stopping instance %s", s.name))
	return messages.Empty{}, link.Emit(ctx, s.l, messages.InstanceStopped, messages.InstanceRef{InstanceID: s.id})
}

func (s *simulated) player(ctx context.Context, what, name string) error {
	if err := link.Emit(ctx, s.l, messages.PlayerEvent, messages.PlayerActivity{InstanceID: s.id, Type: what, Name: name}); err != nil {
		return err
	}
	verb := map[string]string{"join": "joined", "leave": "left"}[what]
	return s.print(ctx, "info", name+" "+verb+" the game")
}

func (s *simulated) command(ctx context.Context, c messages.Command) (messages.CommandResult, error) {
	s.mu.Lock()
	running := s.running
	s.mu.Unlock()
	if !running {
		return messages.CommandResult{}, notRunning(s.id, s.name)
	}
	_ = s.print(ctx, "info", "> "+c.Command)
	verb, arg, _ := strings.Cut(strings.TrimSpace(c.Command), " ")
	arg = strings.TrimSpace(arg)
	reply := func(format string, args ...any) messages.CommandResult {
		return messages.CommandResult{Output: fmt.Sprintf(format, args...)}
	}
	out := func(format string, args ...any) (messages.CommandResult, error) {
		return reply(format, args...), nil
	}
	switch verb {
	case "/help":
		return out("commands: /help, /players, /join NAME, /leave NAME, /say TEXT, /bans")
	case "/players":
		s.mu.Lock()
		players := sortedKeys(s.players)
		s.mu.Unlock()
		if len(players) == 0 {
			return out("no players online")
		}
		return out("%d online: %s", len(players), strings.Join(players, ", "))
	case "/join", "/leave":
		if !validPlayer(arg) {
			return messages.CommandResult{}, link.Errorf("invalid_player", "%q is not a player name (1-64 characters, no spaces)", arg)
		}
		s.mu.Lock()
		reason, banned := s.bans[arg]
		online := s.players[arg]
		join := verb == "/join"
		if join && !banned {
			s.players[arg] = true
		}
		if !join {
			delete(s.players, arg)
		}
		s.mu.Unlock()
		switch {
		case join && banned:
			return out("%s is banned: %s", arg, reason)
		case join && online, !join && !online:
			return out("nothing to do: %s is %s", arg, map[bool]string{true: "online", false: "not online"}[online])
		case join:
			return reply("%s joined", arg), s.player(ctx, "join", arg)
		default:
			return reply("%s left", arg), s.player(ctx, "leave", arg)
		}
	case "/say":
		return reply("said"), s.print(ctx, "info", "[server] "+arg)
	case "/bans":
		s.mu.Lock()
		names := sortedKeys(s.bans)
		s.mu.Unlock()
		if len(names) == 0 {
			return out("no bans")
		}
		return out("banned: %s", strings.Join(names, ", "))
	}
	return out("unknown command %q; try /help", verb)
}

func (s *simulated) ban(ctx context.Context, b messages.Ban) error {
	s.mu.Lock()
	kick := false
	if b.Banned {
		s.bans[b.Name] = b.Reason
		kick = s.players[b.Name]
		delete(s.players, b.Name)
	} else {
		delete(s.bans, b.Name)
	}
	s.mu.Unlock()
	if b.Banned {
		_ = s.print(ctx, "warn", fmt.Sprintf("%s is banned: %s", b.Name, b.Reason))
	} else {
		_ = s.print(ctx, "info", b.Name+" is no longer banned")
	}
	if kick {
		return s.player(ctx, "leave", b.Name)
	}
	return nil
}

func validPlayer(name string) bool {
	return name != "" && len(name) <= 64 && !strings.ContainsAny(name, " \t\r\n")
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
