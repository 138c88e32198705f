package messages

// The core messages: what the fabric's own endpoints say to each other.
// Their links, forwarding and permissions follow Clusterio's built-in
// messages (send_command plays the part of send_rcon, set_player_banned of
// set_user_banned); register_slave replaces the original's WebSocket
// handshake, which a NATS transport does not have.

// Link lifecycle.
var (
	// Ping asks the peer to answer; it measures a round trip and proves the
	// peer is alive.
	Ping = MustRequest[Empty, Empty](Spec{
		Name:        "ping",
		Description: "Ask the peer to answer, proving it is alive.",
		Links:       []Direction{MasterToControl, ControlToMaster, MasterToSlave, SlaveToMaster},
		Permission:  Unrestricted,
	})
	// PrepareDisconnect announces a graceful disconnect: the receiver stops
	// sending new requests and answers once its in-flight ones have ended.
	PrepareDisconnect = MustRequest[Empty, Empty](Spec{
		Name:        "prepare_disconnect",
		Description: "Announce a graceful disconnect; the peer finishes its in-flight requests and answers.",
		Links:       []Direction{MasterToControl, ControlToMaster, MasterToSlave, SlaveToMaster},
		Permission:  Unrestricted,
	})
	// PrepareMasterDisconnect tells an instance that its slave is about to
	// lose the master.
	PrepareMasterDisconnect = MustRequest[Empty, Empty](Spec{
		Name:        "prepare_master_disconnect",
		Description: "Tell an instance that its slave is about to disconnect from the master.",
		Links:       []Direction{SlaveToInstance},
	})
	// MasterConnectionEvent tells an instance how its slave's connection to
	// the master changed.
	MasterConnectionEvent = MustEvent[ConnectionEvent](Spec{
		Name:        "master_connection_event",
		Description: "Tell an instance that its slave's connection to the master changed.",
		Links:       []Direction{SlaveToInstance},
	})
)

// Cluster membership and the master's view.
var (
	// RegisterSlave introduces a slave to the master with the instances it
	// hosts. A slave whose id is already connected from elsewhere is
	// refused.
	//
	// The master answers with the ban list, which the slave keeps and
	// gives to every instance it starts: bans reach a slave however long
	// it was away.
	RegisterSlave = MustRequest[SlaveRegistration, SlaveWelcome](Spec{
		Name:        "register_slave",
		Description: "Introduce a slave and the instances it hosts to the master; the master answers with the ban list.",
		Links:       []Direction{SlaveToMaster},
	})
	// UpdateInstances reports the instances a slave hosts and their status.
	UpdateInstances = MustEvent[InstanceUpdate](Spec{
		Name:        "update_instances",
		Description: "Report the instances a slave hosts and their status.",
		Links:       []Direction{SlaveToMaster},
	})
	// ListSlaves returns every slave the master knows.
	ListSlaves = MustRequest[Empty, SlaveList](Spec{
		Name:        "list_slaves",
		Description: "List every slave the master knows, connected or not.",
		Links:       []Direction{ControlToMaster},
		Permission:  "core.slave.list",
	})
	// ListInstances returns every instance the master knows.
	ListInstances = MustRequest[Empty, InstanceList](Spec{
		Name:        "list_instances",
		Description: "List every instance the master knows, where it lives and its status.",
		Links:       []Direction{ControlToMaster},
		Permission:  "core.instance.list",
	})
	// GetClusterStatus returns the master's whole view in one answer: the
	// active master itself (its term, whether it still waits for its
	// slaves), the masters that stand by, every slave with its version and
	// when the master last heard from it, and every instance. It is a
	// message of its own, not fields added to list_slaves, because a
	// response with properties its schema does not list is refused: older
	// controls would fail.
	GetClusterStatus = MustRequest[Empty, ClusterStatus](Spec{
		Name:        "get_cluster_status",
		Description: "Describe the active master (term, starting), the masters that stand by, every slave (version, connected, last heard from) and every instance.",
		Links:       []Direction{ControlToMaster},
		Permission:  "core.cluster.status",
	})
	// CreateInstance creates an instance on the master, not yet assigned to
	// a slave.
	CreateInstance = MustRequest[NewInstance, InstanceRef](Spec{
		Name:        "create_instance",
		Description: "Create an instance on the master, not yet assigned to any slave.",
		Links:       []Direction{ControlToMaster},
		Permission:  "core.instance.create",
	})
	// AssignInstanceCommand asks the master to give an instance to a slave.
	AssignInstanceCommand = MustRequest[Assignment, Empty](Spec{
		Name:        "assign_instance_command",
		Description: "Ask the master to assign an instance to a slave.",
		Links:       []Direction{ControlToMaster},
		Permission:  "core.instance.assign",
	})
	// DeleteInstance deletes an instance for good: the master asks the
	// slave that hosts it (which stops it if it runs, and forgets it),
	// then forgets it. Its id is never given out again.
	DeleteInstance = MustRequest[InstanceRef, Empty](Spec{
		Name:        "delete_instance",
		Description: "Delete an instance: its slave stops it if it runs and forgets it, then the master forgets it.",
		Links:       []Direction{ControlToMaster, MasterToSlave},
		Permission:  "core.instance.delete",
	})
	// AssignInstance tells a slave to host an instance from now on.
	AssignInstance = MustRequest[HostedInstance, Empty](Spec{
		Name:        "assign_instance",
		Description: "Tell a slave to host an instance.",
		Links:       []Direction{MasterToSlave},
	})
)

// Instance control, forwarded control -> master -> slave -> instance.
var (
	// StartInstance starts an instance.
	StartInstance = MustRequest[InstanceRef, Empty](Spec{
		Name:        "start_instance",
		Description: "Start an instance.",
		Links:       []Direction{ControlToMaster, MasterToSlave, SlaveToInstance},
		ForwardTo:   Instance,
		Permission:  "core.instance.start",
	})
	// StopInstance stops an instance.
	StopInstance = MustRequest[InstanceRef, Empty](Spec{
		Name:        "stop_instance",
		Description: "Stop an instance.",
		Links:       []Direction{ControlToMaster, MasterToSlave, SlaveToInstance},
		ForwardTo:   Instance,
		Permission:  "core.instance.stop",
	})
	// SendCommand runs a command on an instance and returns its output.
	SendCommand = MustRequest[Command, CommandResult](Spec{
		Name:        "send_command",
		Description: "Run a command on an instance and return what it printed.",
		Links:       []Direction{ControlToMaster, MasterToSlave, SlaveToInstance},
		ForwardTo:   Instance,
		Permission:  "core.instance.send_command",
	})
)

// Instance lifecycle and activity, relayed instance -> slave -> master.
var (
	// InstanceStarted reports that an instance is running.
	InstanceStarted = MustEvent[InstanceRef](Spec{
		Name:        "instance_started",
		Description: "Report that an instance is running.",
		Links:       []Direction{InstanceToSlave, SlaveToMaster},
	})
	// InstanceStopped reports that an instance has stopped.
	InstanceStopped = MustEvent[InstanceRef](Spec{
		Name:        "instance_stopped",
		Description: "Report that an instance has stopped.",
		Links:       []Direction{InstanceToSlave, SlaveToMaster},
	})
	// InstanceOutput carries one line an instance printed; the master
	// relays it to the controls that follow that instance.
	InstanceOutput = MustEvent[OutputLine](Spec{
		Name:        "instance_output",
		Description: "One line an instance printed; relayed to the controls following it.",
		Links:       []Direction{InstanceToSlave, SlaveToMaster, MasterToControl},
		ForwardTo:   Master,
	})
	// SetInstanceOutputSubscriptions sets the instances whose output the
	// master relays to the requesting control.
	SetInstanceOutputSubscriptions = MustRequest[OutputSubscriptions, Empty](Spec{
		Name:        "set_instance_output_subscriptions",
		Description: "Set the instances whose output the master relays to this control.",
		Links:       []Direction{ControlToMaster},
		Permission:  "core.instance.follow_log",
	})
	// PlayerEvent reports a player joining or leaving an instance.
	PlayerEvent = MustEvent[PlayerActivity](Spec{
		Name:        "player_event",
		Description: "A player joined or left an instance.",
		Links:       []Direction{InstanceToSlave, SlaveToMaster},
		ForwardTo:   Master,
	})
)

// Bans, broadcast master -> every slave -> every instance.
var (
	// SetPlayerBanned bans or unbans a player everywhere; the master
	// broadcasts the change to every instance.
	SetPlayerBanned = MustRequest[Ban, Empty](Spec{
		Name:        "set_player_banned",
		Description: "Ban or unban a player on every instance.",
		Links:       []Direction{ControlToMaster},
		Permission:  "core.user.set_banned",
	})
	// ListBannedPlayers lists the players banned on every instance.
	ListBannedPlayers = MustRequest[Empty, BanList](Spec{
		Name:        "list_banned_players",
		Description: "List the players banned on every instance.",
		Links:       []Direction{ControlToMaster},
		Permission:  "core.user.list_banned",
	})
	// SetPlugins tells the master which plugins a control has: addressed
	// messages of another plugin are not sent to it (plugin_missing).
	SetPlugins = MustRequest[PluginList, Empty](Spec{
		Name:        "set_plugins",
		Description: "Tell the master which plugins the control has, so that it is sent only their messages.",
		Links:       []Direction{ControlToMaster},
		Permission:  Unrestricted,
	})
	// BanlistUpdate carries a ban to every instance.
	BanlistUpdate = MustEvent[Ban](Spec{
		Name:        "banlist_update",
		Description: "A ban or unban, broadcast to every instance.",
		Links:       []Direction{MasterToSlave, SlaveToInstance},
		BroadcastTo: Instance,
	})
)

// Subscriptions, control -> master, and the updates the master sends
// (after Clusterio's later SubscriptionRequest, SlaveUpdatesEvent and
// InstanceDetailsUpdatesEvent).
var (
	// Subscribe starts (subscribe true) or ends (false) a control's
	// subscription to an update event: slave_updates, instance_updates or
	// a plugin's (fabric.WithSubscribable). The master first sends, as
	// that event, the current state of every entry updated after SinceMS
	// (every entry for 0), then each change as it happens, until the
	// control unsubscribes or its link ends; it answers once the first
	// part is sent. Anyone may send it: the master checks the permission
	// of the event named (slave_updates: core.slave.list,
	// instance_updates: core.instance.list).
	Subscribe = MustRequest[Subscription, Empty](Spec{
		Name:        "subscribe",
		Description: "Subscribe to (or unsubscribe from) an update event: what changed since a time, then every change as it happens.",
		Links:       []Direction{ControlToMaster},
		Permission:  Unrestricted,
	})
	// SlaveUpdates carries changed slaves to the controls subscribed.
	SlaveUpdates = MustEvent[SlaveChanges](Spec{
		Name:        "slave_updates",
		Description: "Slaves that changed (connected, name, instances, version, added), to the controls subscribed.",
		Links:       []Direction{MasterToControl},
	})
	// InstanceUpdates carries changed instances to the controls subscribed.
	InstanceUpdates = MustEvent[InstanceChanges](Spec{
		Name:        "instance_updates",
		Description: "Instances that changed (status, slave, name, created, deleted), to the controls subscribed.",
		Links:       []Direction{MasterToControl},
	})
)

var coreMessages = []Message{
	Ping, PrepareDisconnect, PrepareMasterDisconnect, MasterConnectionEvent,
	RegisterSlave, UpdateInstances, ListSlaves, ListInstances, GetClusterStatus,
	CreateInstance, AssignInstanceCommand, AssignInstance, DeleteInstance,
	StartInstance, StopInstance, SendCommand,
	InstanceStarted, InstanceStopped, InstanceOutput, SetInstanceOutputSubscriptions, PlayerEvent,
	SetPlayerBanned, ListBannedPlayers, BanlistUpdate, SetPlugins,
	Subscribe, SlaveUpdates, InstanceUpdates,
}

// PluginList is the payload of set_plugins: the names of the plugins an
// endpoint has (messages.Plugin.Name).
type PluginList struct {
	Plugins []string `json:"plugins" schema:"maxItems=1000"`
}

// ConnectionEvent is the payload of master_connection_event.
type ConnectionEvent struct {
	// Event is "connect", "drop" (connection lost, session kept),
	// "resume" (reconnected within the session) or "close" (session ended).
	Event string `json:"event" schema:"enum=connect|drop|resume|close"`
}

// Instance statuses, as reported by slaves and listed by the master.
const (
	StatusUnassigned = "unassigned" // known to the master, hosted by no slave
	StatusUnknown    = "unknown"    // its slave is not connected
	StatusStopped    = "stopped"
	StatusStarting   = "starting"
	StatusRunning    = "running"
	StatusStopping   = "stopping"
)

// MaxInstanceID is the largest instance id (2^53-1): every instance_id
// in a message is at most this, the largest integer a JavaScript client
// (Clusterio's) reads exactly. A slave that brings a larger id is refused
// (invalid_message), so no peer can use the id space up.
const MaxInstanceID = 1<<53 - 1

// HostedInstance is an instance as its slave describes it, or as the
// master gives it to a slave (assign_instance), with its program if it
// runs one.
type HostedInstance struct {
	ID     int64  `json:"instance_id" schema:"minimum=1,maximum=9007199254740991"`
	Name   string `json:"name" schema:"minLength=1,maxLength=128"`
	Status string `json:"status,omitempty" schema:"enum=stopped|starting|running|stopping"`
	// Program, if set, is what the instance runs; nil means the slave's
	// default kind of instance (simulated, for the fabric command).
	Program *Program `json:"program,omitempty"`
}

// Program is the configuration of an instance that runs a program on its
// slave: the program is started by start_instance and stopped by
// stop_instance, each line it prints is an instance_output, and
// send_command writes a line to its standard input. A slave runs only
// programs its allow-list names (FABRIC_SLAVE_ALLOW_PROGRAMS).
type Program struct {
	// Command is the program's absolute path, as the slave's allow-list
	// must name it. (The master checks that it is absolute: a schema
	// pattern would need the validator's regexp, which it compiles
	// lazily and racily.)
	Command string `json:"command" schema:"minLength=2,maxLength=4096"`
	// Args are its arguments, after the command.
	Args []string `json:"args,omitempty" schema:"maxItems=256"`
	// Dir is the absolute path of its working directory; empty means the
	// slave's.
	Dir string `json:"dir,omitempty" schema:"maxLength=4096"`
}

// SlaveRegistration is the payload of register_slave.
type SlaveRegistration struct {
	ID        int64            `json:"slave_id" schema:"minimum=1"`
	Name      string           `json:"name" schema:"minLength=1,maxLength=128"`
	Version   string           `json:"version" schema:"maxLength=64"`
	Instances []HostedInstance `json:"instances" schema:"maxItems=10000"`
	// Plugins names the slave's plugins (and so its instances'): the
	// master sends them addressed messages of these plugins only. Absent
	// from a slave that has none, so that a master of an earlier version
	// still takes its registration.
	Plugins []string `json:"plugins,omitempty" schema:"maxItems=1000"`
}

// SlaveWelcome is the response of register_slave.
type SlaveWelcome struct {
	// Bans is every ban in force: the slave gives them to each instance
	// it starts, and to its running instances what changed since it last
	// heard.
	Bans []Ban `json:"bans" schema:"maxItems=1000000"`
}

// InstanceUpdate is the payload of update_instances: the full list of the
// sending slave's instances.
type InstanceUpdate struct {
	Instances []HostedInstance `json:"instances" schema:"maxItems=10000"`
}

// SlaveInfo is one slave in the master's view.
type SlaveInfo struct {
	ID        int64  `json:"slave_id"`
	Name      string `json:"name"`
	Connected bool   `json:"connected"`
	Instances int    `json:"instances"`
}

// SlaveList is the response of list_slaves.
type SlaveList struct {
	Slaves []SlaveInfo `json:"slaves"`
}

// ClusterStatus is the response of get_cluster_status.
type ClusterStatus struct {
	Master MasterStatus `json:"master"`
	// Standbys are the other master processes, ready to take over when
	// the active one stops or fails, longest standing by first.
	Standbys []MasterInfo `json:"standbys" schema:"maxItems=100"`
	// StandbysUnknown, if set, says why the master could not tell which
	// masters stand by (it reads them from JetStream); Standbys is then
	// empty. The rest of the answer holds all the same.
	StandbysUnknown string         `json:"standbys_unknown,omitempty" schema:"maxLength=1024"`
	Slaves          []SlaveStatus  `json:"slaves"`
	Instances       []InstanceInfo `json:"instances"`
}

// MasterInfo is one master process.
type MasterInfo struct {
	ID   string `json:"id" schema:"maxLength=64"`    // unique per process
	Name string `json:"name" schema:"maxLength=256"` // host and pid, for people
	// Version is the process's fabric version ("" if it does not say).
	Version string `json:"version,omitempty" schema:"maxLength=64"`
	// Since is when it became active, or began to stand by, in
	// milliseconds since the Unix epoch.
	Since int64 `json:"since" schema:"minimum=0"`
	// Term is the active master's term: it grows with every master that
	// becomes active. 0 for a standby.
	Term uint64 `json:"term,omitempty"`
}

// MasterStatus describes the active master, which answers
// get_cluster_status.
type MasterStatus struct {
	MasterInfo
	// Commit, if known, is the source revision the master was built from.
	Commit string `json:"commit,omitempty" schema:"maxLength=64"`
	// Started is when the master's process started, in milliseconds since
	// the Unix epoch; UptimeMS how long ago that was, by the master's
	// clock.
	Started  int64 `json:"started" schema:"minimum=0"`
	UptimeMS int64 `json:"uptime_ms" schema:"minimum=0"`
	// Starting is true while the master, newly active, waits for the
	// slaves it knows to register (bounded): until then it waits before
	// answering what depends on them.
	Starting bool `json:"starting"`
}

// SlaveStatus is one slave in get_cluster_status: what list_slaves says,
// and more.
type SlaveStatus struct {
	SlaveInfo
	// Version is what the slave reported when it registered.
	Version string `json:"version" schema:"maxLength=64"`
	// LastSeen is when the master last heard from the slave, in
	// milliseconds since the Unix epoch; SilentMS how long ago that was,
	// by the master's clock, so that a control need not trust its own.
	LastSeen int64 `json:"last_seen" schema:"minimum=0"`
	SilentMS int64 `json:"silent_ms" schema:"minimum=0"`
}

// InstanceInfo is one instance in the master's view.
type InstanceInfo struct {
	ID      int64  `json:"instance_id" schema:"minimum=1,maximum=9007199254740991"`
	Name    string `json:"name"`
	SlaveID int64  `json:"slave_id,omitempty"` // 0: not assigned
	Status  string `json:"status" schema:"enum=unassigned|unknown|stopped|starting|running|stopping"`
}

// InstanceList is the response of list_instances.
type InstanceList struct {
	Instances []InstanceInfo `json:"instances"`
}

// InstanceRef names one instance.
type InstanceRef struct {
	InstanceID int64 `json:"instance_id" schema:"minimum=1,maximum=9007199254740991"`
}

// NewInstance is the payload of create_instance.
type NewInstance struct {
	Name string `json:"name" schema:"minLength=1,maxLength=128"`
	// Program, if set, makes an instance that runs this program; without
	// it the instance is of its slave's default kind (simulated).
	Program *Program `json:"program,omitempty"`
}

// Assignment is the payload of assign_instance_command.
type Assignment struct {
	InstanceID int64 `json:"instance_id" schema:"minimum=1,maximum=9007199254740991"`
	SlaveID    int64 `json:"slave_id" schema:"minimum=1"`
}

// Command is the payload of send_command.
type Command struct {
	InstanceID int64  `json:"instance_id" schema:"minimum=1,maximum=9007199254740991"`
	Command    string `json:"command" schema:"minLength=1,maxLength=4096"`
}

// CommandResult is the response of send_command.
type CommandResult struct {
	Output string `json:"output"`
}

// OutputLine is the payload of instance_output.
type OutputLine struct {
	InstanceID int64  `json:"instance_id" schema:"minimum=1,maximum=9007199254740991"`
	Time       int64  `json:"time"` // Unix milliseconds
	Level      string `json:"level" schema:"enum=info|warn|error"`
	Message    string `json:"message" schema:"maxLength=65536"`
}

// OutputSubscriptions is the payload of set_instance_output_subscriptions.
type OutputSubscriptions struct {
	InstanceIDs []int64 `json:"instance_ids" schema:"maxItems=10000"`
	// Since, if given for an instance, asks the master to relay first the
	// lines of that instance it still holds (a bounded number) whose time
	// is at or after Time: what a control that followed it before missed
	// while it moved to this master.
	Since []OutputCursor `json:"since,omitempty" schema:"maxItems=10000"`
	// SinceMS, if not 0, asks the same for every instance named in
	// InstanceIDs: the lines it still holds whose time is after SinceMS
	// (Unix milliseconds). A cursor in Since wins for its instance.
	SinceMS int64 `json:"since_ms,omitempty" schema:"minimum=0"`
}

// OutputCursor is where a control's view of an instance's output ends.
type OutputCursor struct {
	InstanceID int64 `json:"instance_id" schema:"minimum=1,maximum=9007199254740991"`
	Time       int64 `json:"time"` // Unix milliseconds
}

// BanList is the response of list_banned_players.
type BanList struct {
	Bans []Ban `json:"bans"`
}

// PlayerActivity is the payload of player_event.
type PlayerActivity struct {
	InstanceID int64  `json:"instance_id" schema:"minimum=1,maximum=9007199254740991"`
	Type       string `json:"type" schema:"enum=join|leave"`
	Name       string `json:"name" schema:"minLength=1,maxLength=64"`
}

// Ban is the payload of set_player_banned and banlist_update.
type Ban struct {
	Name   string `json:"name" schema:"minLength=1,maxLength=64"`
	Banned bool   `json:"banned"`
	Reason string `json:"reason,omitempty" schema:"maxLength=1024"`
}

// Subscription is the payload of subscribe.
type Subscription struct {
	// Event is the update event subscribed to: slave_updates,
	// instance_updates, or a plugin's.
	Event     string `json:"event" schema:"minLength=1,maxLength=128"`
	Subscribe bool   `json:"subscribe"`
	// SinceMS, on subscribe, asks for the entries updated after it (an
	// updated_at_ms the control has seen), deletions included; 0: every
	// entry there is.
	SinceMS int64 `json:"since_ms,omitempty" schema:"minimum=0"`
}

// UpdateStamp is what every entry of an update event carries.
// UpdatedAtMS grows strictly with each update the master hands out,
// across its restarts and failovers, so that a subscriber keeps the
// newest it has seen and drops anything not newer. IsDeleted says the
// entry is gone (its other fields are as they were last).
type UpdateStamp struct {
	UpdatedAtMS int64 `json:"updated_at_ms" schema:"minimum=0"`
	IsDeleted   bool  `json:"is_deleted"`
}

// SlaveChange is one slave in slave_updates.
type SlaveChange struct {
	ID        int64  `json:"slave_id"`
	Name      string `json:"name"`
	Connected bool   `json:"connected"`
	Instances int    `json:"instances"`
	Version   string `json:"version" schema:"maxLength=64"`
	// LastSeenMS is when the master last heard from the slave, as it was
	// when the entry changed: it changing alone makes no update.
	LastSeenMS int64 `json:"last_seen_ms" schema:"minimum=0"`
	UpdateStamp
}

// SlaveChanges is the payload of slave_updates, oldest update first.
type SlaveChanges struct {
	Updates []SlaveChange `json:"updates" schema:"maxItems=10000"`
}

// InstanceChange is one instance in instance_updates.
type InstanceChange struct {
	ID      int64  `json:"instance_id" schema:"minimum=1,maximum=9007199254740991"`
	Name    string `json:"name"`
	SlaveID int64  `json:"slave_id,omitempty"` // 0: not assigned
	Status  string `json:"status" schema:"enum=unassigned|unknown|stopped|starting|running|stopping"`
	UpdateStamp
}

// InstanceChanges is the payload of instance_updates, oldest update
// first.
type InstanceChanges struct {
	Updates []InstanceChange `json:"updates" schema:"maxItems=10000"`
}

// Update is one entry of a plugin's update event: the entry's key, its
// value (absent when deleted), and its stamp.
type Update[T any] struct {
	Key   string `json:"key" schema:"minLength=1,maxLength=256"`
	Value *T     `json:"value,omitempty"`
	UpdateStamp
}

// Updates is the payload of a plugin's update event, oldest update
// first: define the event as messages.MustEvent[messages.Updates[T]],
// on MasterToControl, and make it subscribable on the master
// (fabric.WithSubscribable).
type Updates[T any] struct {
	Updates []Update[T] `json:"updates" schema:"maxItems=10000"`
}
