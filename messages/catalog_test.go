package messages_test

import (
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/linkfabric/linkfabric/messages"
)

// coreMessages lists every core message the package exports.
var coreMessages = []messages.Message{
	messages.Ping, messages.PrepareDisconnect, messages.PrepareMasterDisconnect, messages.MasterConnectionEvent,
	messages.RegisterSlave, messages.UpdateInstances, messages.ListSlaves, messages.ListInstances, messages.GetClusterStatus,
	messages.CreateInstance, messages.AssignInstanceCommand, messages.AssignInstance,
	messages.DeleteInstance, messages.ListBannedPlayers,
	messages.StartInstance, messages.StopInstance, messages.SendCommand,
	messages.InstanceStarted, messages.InstanceStopped, messages.InstanceOutput,
	messages.SetInstanceOutputSubscriptions, messages.PlayerEvent,
	messages.SetPlayerBanned, messages.BanlistUpdate, messages.SetPlugins,
	messages.Subscribe, messages.SlaveUpdates, messages.InstanceUpdates,
}

func TestCatalogHoldsCoreMessages(t *testing.T) {
	c := newCatalog(t)
	all := c.All()
	if len(all) != len(coreMessages) {
		t.Errorf("the core catalog has %d messages; want %d", len(all), len(coreMessages))
	}
	for _, m := range coreMessages {
		d := m.Def()
		if !c.Contains(m) {
			t.Errorf("catalog does not contain %s", d.Name())
		}
		got, ok := c.Lookup(d.Name())
		if !ok || got != d {
			t.Errorf("Lookup(%q) = %p, %v; want %p", d.Name(), got, ok, d)
		}
		if d.Plugin() != "" {
			t.Errorf("core message %s has plugin %q", d.Name(), d.Plugin())
		}
	}
	if d, ok := c.Lookup("no_such_message"); ok || d != nil {
		t.Errorf("Lookup of an unknown name = %v, %v", d, ok)
	}
	if _, ok := c.Lookup(""); ok {
		t.Error("Lookup of the empty name found something")
	}
}

func TestCatalogAll(t *testing.T) {
	chat := messages.MustEvent[messages.Empty](messages.Spec{Name: "global_chat:chat", Links: []messages.Direction{messages.MasterToSlave}})
	alpha := messages.MustEvent[messages.Empty](messages.Spec{Name: "alpha:first", Links: []messages.Direction{messages.MasterToSlave}})
	c := newCatalog(t,
		messages.Plugin{Name: "global_chat", Messages: []messages.Message{chat}},
		messages.Plugin{Name: "alpha", Messages: []messages.Message{alpha}},
	)
	all := c.All()
	if len(all) != len(coreMessages)+2 {
		t.Fatalf("All() has %d messages; want %d", len(all), len(coreMessages)+2)
	}
	names := make([]string, len(all))
	for i, d := range all {
		names[i] = d.Name()
	}
	if !slices.IsSorted(names) {
		t.Errorf("All() is not sorted by name: %v", names)
	}
	if !slices.Contains(names, "alpha:first") || !slices.Contains(names, "global_chat:chat") {
		t.Errorf("All() lacks the plugin messages: %v", names)
	}
	all[0] = nil
	if again := c.All(); len(again) != len(names) || again[0] == nil || again[0].Name() != names[0] {
		t.Error("changing the slice All() returned changed the catalog")
	}
	if got, _ := c.Lookup("alpha:first"); got != alpha.Def() {
		t.Errorf("Lookup(alpha:first) = %v", got)
	}
}

func TestCatalogOn(t *testing.T) {
	chat := messages.MustEvent[messages.Empty](messages.Spec{Name: "global_chat:chat", Links: []messages.Direction{messages.ControlToMaster, messages.MasterToSlave, messages.SlaveToInstance}, BroadcastTo: messages.Instance, Permission: "global_chat.chat"})
	c := newCatalog(t, messages.Plugin{Name: "global_chat", Messages: []messages.Message{chat}})
	tests := []struct {
		name    string
		dir     messages.Direction
		include []string
		exclude []string
	}{
		{name: "control-master", dir: messages.Direction{Source: messages.Control, Target: messages.Master},
			include: []string{"ping", "prepare_disconnect", "list_slaves", "start_instance", "send_command", "set_player_banned", "global_chat:chat"},
			exclude: []string{"register_slave", "instance_output", "banlist_update"}},
		{name: "slave-instance", dir: messages.Direction{Source: messages.Slave, Target: messages.Instance},
			include: []string{"prepare_master_disconnect", "master_connection_event", "start_instance", "banlist_update", "global_chat:chat"},
			exclude: []string{"ping", "instance_output", "register_slave"}},
		{name: "instance-slave", dir: messages.Direction{Source: messages.Instance, Target: messages.Slave},
			include: []string{"instance_started", "instance_stopped", "instance_output", "player_event"},
			exclude: []string{"start_instance", "banlist_update", "global_chat:chat"}},
		{name: "master-control", dir: messages.Direction{Source: messages.Master, Target: messages.Control},
			include: []string{"ping", "prepare_disconnect", "instance_output"},
			exclude: []string{"list_slaves", "start_instance"}},
		{name: "instance-master", dir: messages.Direction{Source: messages.Instance, Target: messages.Master}},
		{name: "control-instance", dir: messages.Direction{Source: messages.Control, Target: messages.Instance}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			on := c.On(tc.dir)
			var names []string
			for _, d := range on {
				if !d.ValidOn(tc.dir) {
					t.Errorf("On(%v) returned %s, which is not valid on it", tc.dir, d.Name())
				}
				names = append(names, d.Name())
			}
			if !slices.IsSorted(names) {
				t.Errorf("On(%v) is not sorted: %v", tc.dir, names)
			}
			want := 0
			for _, d := range c.All() {
				if d.ValidOn(tc.dir) {
					want++
				}
			}
			if len(on) != want {
				t.Errorf("On(%v) has %d messages; %d in the catalog are valid on it", tc.dir, len(on), want)
			}
			for _, n := range tc.include {
				if !slices.Contains(names, n) {
					t.Errorf("On(%v) lacks %s", tc.dir, n)
				}
			}
			for _, n := range tc.exclude {
				if slices.Contains(names, n) {
					t.Errorf("On(%v) has %s", tc.dir, n)
				}
			}
		})
	}
}

func TestCatalogErrors(t *testing.T) {
	ev := func(name string) messages.Message {
		return messages.MustEvent[messages.Empty](messages.Spec{Name: name, Links: []messages.Direction{messages.MasterToSlave}})
	}
	chat := ev("global_chat:chat")
	tests := []struct {
		name    string
		plugins []messages.Plugin
		names   string // what the error must name
		reason  string
	}{
		{name: "message without prefix", names: `"chat"`, reason: "global_chat",
			plugins: []messages.Plugin{{Name: "global_chat", Messages: []messages.Message{ev("chat")}}}},
		{name: "core message listed by a plugin", names: `"ping"`, reason: "global_chat",
			plugins: []messages.Plugin{{Name: "global_chat", Messages: []messages.Message{messages.Ping}}}},
		{name: "another plugin's prefix", names: `"research_sync:progress"`, reason: "global_chat",
			plugins: []messages.Plugin{{Name: "global_chat", Messages: []messages.Message{ev("research_sync:progress")}}}},
		{name: "prefix that only starts the same", names: `"global_chat_extra:chat"`, reason: "global_chat",
			plugins: []messages.Plugin{{Name: "global_chat", Messages: []messages.Message{ev("global_chat_extra:chat")}}}},
		{name: "two definitions with one name", names: `"global_chat:chat"`, reason: "twice",
			plugins: []messages.Plugin{{Name: "global_chat", Messages: []messages.Message{chat, ev("global_chat:chat")}}}},
		{name: "one definition listed twice", names: `"global_chat:chat"`, reason: "twice",
			plugins: []messages.Plugin{{Name: "global_chat", Messages: []messages.Message{chat, chat}}}},
		{name: "message listed by two plugins", names: `"global_chat:chat"`, reason: "research_sync",
			plugins: []messages.Plugin{
				{Name: "global_chat", Messages: []messages.Message{chat}},
				{Name: "research_sync", Messages: []messages.Message{chat}},
			}},
		{name: "same plugin listed twice", names: `"global_chat"`, reason: "twice",
			plugins: []messages.Plugin{
				{Name: "global_chat", Messages: []messages.Message{chat}},
				{Name: "global_chat"},
			}},
		{name: "empty plugin name", names: `""`, reason: "snake_case",
			plugins: []messages.Plugin{{Name: ""}}},
		{name: "capitalised plugin name", names: `"GlobalChat"`, reason: "snake_case",
			plugins: []messages.Plugin{{Name: "GlobalChat"}}},
		{name: "plugin name with colon", names: `"global:chat"`, reason: "snake_case",
			plugins: []messages.Plugin{{Name: "global:chat"}}},
		{name: "plugin name with dash", names: `"global-chat"`, reason: "snake_case",
			plugins: []messages.Plugin{{Name: "global-chat"}}},
		{name: "nil definition", names: `"global_chat"`, reason: "nil",
			plugins: []messages.Plugin{{Name: "global_chat", Messages: []messages.Message{(*messages.Definition)(nil)}}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := messages.NewCatalog(tc.plugins...)
			if c != nil {
				t.Error("NewCatalog returned a catalog along with the error")
			}
			requireDefinitionError(t, err, strings.Trim(tc.names, `"`), tc.reason)
		})
	}
}

func TestCatalogAcceptsPlugins(t *testing.T) {
	chat := messages.MustEvent[messages.Empty](messages.Spec{Name: "global_chat:chat", Links: []messages.Direction{messages.MasterToSlave}})
	contribution := messages.MustEvent[messages.Empty](messages.Spec{Name: "research_sync:contribution", Links: []messages.Direction{messages.InstanceToSlave, messages.SlaveToMaster}, ForwardTo: messages.Master})
	progress := messages.MustEvent[messages.Empty](messages.Spec{Name: "research_sync:progress", Links: bcInstanceLinks, BroadcastTo: messages.Instance})
	c := newCatalog(t,
		messages.Plugin{Name: "global_chat", Messages: []messages.Message{chat}},
		messages.Plugin{Name: "research_sync", Messages: []messages.Message{contribution, progress.Def()}},
		messages.Plugin{Name: "no_messages"},
	)
	for _, m := range []messages.Message{chat, contribution, progress} {
		if !c.Contains(m) {
			t.Errorf("catalog lacks %s", m.Def().Name())
		}
	}
	// Catalogs are independent: a second one without plugins does not see
	// the first one's.
	if core := newCatalog(t); core.Contains(chat) {
		t.Error("a core-only catalog contains a plugin message")
	}
}

func TestCatalogContains(t *testing.T) {
	chat := messages.MustEvent[messages.Empty](messages.Spec{Name: "global_chat:chat", Links: []messages.Direction{messages.MasterToSlave}})
	c := newCatalog(t, messages.Plugin{Name: "global_chat", Messages: []messages.Message{chat}})
	otherPing := messages.MustRequest[messages.Empty, messages.Empty](messages.Spec{Name: "ping", Links: []messages.Direction{messages.MasterToSlave}})
	otherChat := messages.MustEvent[messages.Empty](messages.Spec{Name: "global_chat:chat", Links: []messages.Direction{messages.MasterToSlave}})
	unknown := messages.MustEvent[messages.Empty](messages.Spec{Name: "global_chat:whisper", Links: []messages.Direction{messages.MasterToSlave}})
	tests := []struct {
		name string
		m    messages.Message
		want bool
	}{
		{name: "core request", m: messages.Ping, want: true},
		{name: "core event", m: messages.InstanceOutput, want: true},
		{name: "core definition", m: messages.StartInstance.Def(), want: true},
		{name: "plugin event", m: chat, want: true},
		{name: "plugin definition", m: chat.Def(), want: true},
		{name: "another ping", m: otherPing, want: false},
		{name: "another chat", m: otherChat, want: false},
		{name: "unlisted plugin message", m: unknown, want: false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := c.Contains(tc.m); got != tc.want {
				t.Errorf("Contains(%s) = %v; want %v", tc.m.Def().Name(), got, tc.want)
			}
		})
	}
}

// A plugin error names the plugin it is about as well as the message.
func TestCatalogErrorNamesPlugin(t *testing.T) {
	m := messages.MustEvent[messages.Empty](messages.Spec{Name: "chat", Links: []messages.Direction{messages.MasterToSlave}})
	_, err := messages.NewCatalog(messages.Plugin{Name: "global_chat", Messages: []messages.Message{m}})
	if err == nil || !strings.Contains(err.Error(), strconv.Quote("global_chat")) || !strings.Contains(err.Error(), strconv.Quote("chat")) {
		t.Errorf("error %v does not name both the plugin and the message", err)
	}
}
