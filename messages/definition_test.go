package messages_test

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/linkfabric/linkfabric/messages"
)

// Types used by definition tests.
type (
	target struct {
		ID int64 `json:"instance_id"`
	}
	targetUint32 struct {
		ID uint32 `json:"instance_id"`
	}
	targetEmbedded struct {
		target
		Text string `json:"text"`
	}
	targetString struct {
		ID string `json:"instance_id"`
	}
	targetFloat struct {
		ID float64 `json:"instance_id"`
	}
	targetPointer struct {
		ID *int64 `json:"instance_id"`
	}
	targetUntagged struct {
		InstanceID int64
	}
	withChan struct {
		C chan int `json:"c"`
	}
	withMapIntKey struct {
		M map[int]string `json:"m"`
	}
	withComplex struct {
		C complex128 `json:"c"`
	}
	withStringOption struct {
		N int `json:"n,string"`
	}
	recursive struct {
		Name     string       `json:"name"`
		Children []*recursive `json:"children"`
	}
	ownJSON    struct{}
	ownJSONPtr struct{}
	withOwn    struct {
		V ownJSONPtr `json:"v"`
	}
	tagNotNumber struct {
		V int `json:"v" schema:"minimum=abc"`
	}
	tagNegativeCount struct {
		V string `json:"v" schema:"minLength=-1"`
	}
	tagUnknown struct {
		V string `json:"v" schema:"colour=red"`
	}
	tagNoValue struct {
		V string `json:"v" schema:"minLength"`
	}
	tagFractionCount struct {
		V []int `json:"v" schema:"maxItems=1.5"`
	}
	tagBadPattern struct {
		V string `json:"v" schema:"pattern=[a-z"`
	}
	tagPatternComma struct {
		V string `json:"v" schema:"pattern=^a{1,3}$"`
	}
)

func (ownJSON) MarshalJSON() ([]byte, error)     { return []byte(`"own"`), nil }
func (*ownJSONPtr) MarshalJSON() ([]byte, error) { return []byte(`"own"`), nil }

// controlMaster returns links for a request sent by a control.
var (
	fwdInstanceLinks = []messages.Direction{messages.ControlToMaster, messages.MasterToSlave, messages.SlaveToInstance}
	bcInstanceLinks  = []messages.Direction{messages.MasterToSlave, messages.SlaveToInstance}
)

func TestDefinitionErrors(t *testing.T) {
	tests := []struct {
		name   string
		define defineFunc
		spec   messages.Spec
		reason string // a word the error must contain, to tell which mistake it reports
	}{
		// Names.
		{name: "empty name", define: event[messages.Empty](),
			spec: messages.Spec{Name: "", Links: []messages.Direction{messages.MasterToSlave}}, reason: "empty"},
		{name: "CamelCase name", define: event[messages.Empty](),
			spec: messages.Spec{Name: "StartInstance", Links: []messages.Direction{messages.MasterToSlave}}, reason: "snake_case"},
		{name: "leading digit", define: event[messages.Empty](),
			spec: messages.Spec{Name: "1st_message", Links: []messages.Direction{messages.MasterToSlave}}, reason: "snake_case"},
		{name: "leading underscore", define: event[messages.Empty](),
			spec: messages.Spec{Name: "_hidden", Links: []messages.Direction{messages.MasterToSlave}}, reason: "snake_case"},
		{name: "dash in name", define: event[messages.Empty](),
			spec: messages.Spec{Name: "start-instance", Links: []messages.Direction{messages.MasterToSlave}}, reason: "snake_case"},
		{name: "space in name", define: event[messages.Empty](),
			spec: messages.Spec{Name: "start instance", Links: []messages.Direction{messages.MasterToSlave}}, reason: "snake_case"},
		{name: "two colons", define: event[messages.Empty](),
			spec: messages.Spec{Name: "a:b:c", Links: []messages.Direction{messages.MasterToSlave}}, reason: "plugin_name:type"},
		{name: "capitalised plugin", define: event[messages.Empty](),
			spec: messages.Spec{Name: "Plugin:x", Links: []messages.Direction{messages.MasterToSlave}}, reason: "plugin_name:type"},
		{name: "capitalised plugin type", define: event[messages.Empty](),
			spec: messages.Spec{Name: "plugin:X", Links: []messages.Direction{messages.MasterToSlave}}, reason: "plugin_name:type"},
		{name: "empty plugin", define: event[messages.Empty](),
			spec: messages.Spec{Name: ":chat", Links: []messages.Direction{messages.MasterToSlave}}, reason: "plugin_name:type"},
		{name: "empty plugin type", define: event[messages.Empty](),
			spec: messages.Spec{Name: "global_chat:", Links: []messages.Direction{messages.MasterToSlave}}, reason: "plugin_name:type"},

		// Links.
		{name: "nil links", define: event[messages.Empty](),
			spec: messages.Spec{Name: "no_links"}, reason: "no links"},
		{name: "empty links", define: request[messages.Empty, messages.Empty](),
			spec: messages.Spec{Name: "no_links", Links: []messages.Direction{}}, reason: "no links"},
		{name: "link without target", define: event[messages.Empty](),
			spec: messages.Spec{Name: "bad_link", Links: []messages.Direction{{Source: messages.Control}}}, reason: "control-none"},
		{name: "link to itself", define: event[messages.Empty](),
			spec: messages.Spec{Name: "bad_link", Links: []messages.Direction{{Source: messages.Control, Target: messages.Control}}}, reason: "control-control"},
		{name: "unknown endpoint", define: event[messages.Empty](),
			spec: messages.Spec{Name: "bad_link", Links: []messages.Direction{{Source: messages.Endpoint(9), Target: messages.Master}}}, reason: "Endpoint(9)-master"},
		{name: "zero link", define: event[messages.Empty](),
			spec: messages.Spec{Name: "bad_link", Links: []messages.Direction{messages.MasterToSlave, {}}}, reason: "none-none"},
		{name: "duplicate link", define: event[messages.Empty](),
			spec: messages.Spec{Name: "dup_link", Links: []messages.Direction{messages.MasterToSlave, messages.SlaveToInstance, messages.MasterToSlave}}, reason: "twice"},

		// Forwarding and broadcast.
		{name: "forward to slave", define: event[messages.Empty](),
			spec: messages.Spec{Name: "fwd", Links: []messages.Direction{messages.MasterToSlave}, ForwardTo: messages.Slave}, reason: "forwardTo slave"},
		{name: "forward to control", define: event[messages.Empty](),
			spec: messages.Spec{Name: "fwd", Links: []messages.Direction{messages.MasterToControl}, ForwardTo: messages.Control}, reason: "forwardTo control"},
		{name: "forward to invalid endpoint", define: event[messages.Empty](),
			spec: messages.Spec{Name: "fwd", Links: []messages.Direction{messages.MasterToSlave}, ForwardTo: messages.Endpoint(9)}, reason: "forwardTo"},
		{name: "broadcast request", define: request[messages.Empty, messages.Empty](),
			spec: messages.Spec{Name: "bc", Links: bcInstanceLinks, BroadcastTo: messages.Instance}, reason: "events only"},
		{name: "broadcast to master", define: event[messages.Empty](),
			spec: messages.Spec{Name: "bc", Links: []messages.Direction{messages.SlaveToMaster}, BroadcastTo: messages.Master}, reason: "broadcastTo master"},
		{name: "broadcast to slave", define: event[messages.Empty](),
			spec: messages.Spec{Name: "bc", Links: []messages.Direction{messages.MasterToSlave}, BroadcastTo: messages.Slave}, reason: "broadcastTo slave"},
		{name: "broadcast to control", define: event[messages.Empty](),
			spec: messages.Spec{Name: "bc", Links: []messages.Direction{messages.MasterToControl}, BroadcastTo: messages.Control}, reason: "broadcastTo control"},

		// Permissions.
		{name: "control-master request without permission", define: request[messages.Empty, messages.Empty](),
			spec: messages.Spec{Name: "list_things", Links: []messages.Direction{messages.ControlToMaster}}, reason: "permission"},
		{name: "control-master request among others without permission", define: request[messages.Empty, messages.Empty](),
			spec: messages.Spec{Name: "ping_all", Links: []messages.Direction{messages.MasterToControl, messages.ControlToMaster}}, reason: "permission"},
		{name: "control-master event without permission", define: event[messages.Empty](),
			spec: messages.Spec{Name: "chat", Links: []messages.Direction{messages.ControlToMaster}}, reason: "an event valid on control-master must declare a permission"},
		{name: "permission on event not sent by control", define: event[messages.Empty](),
			spec: messages.Spec{Name: "chat", Links: []messages.Direction{messages.MasterToSlave}, Permission: "core.chat"}, reason: `"core.chat"`},
		{name: "permission on request not sent by control", define: request[messages.Empty, messages.Empty](),
			spec: messages.Spec{Name: "assign", Links: []messages.Direction{messages.MasterToSlave}, Permission: "core.assign"}, reason: `"core.assign"`},
		{name: "permission on master-control request", define: request[messages.Empty, messages.Empty](),
			spec: messages.Spec{Name: "ask", Links: []messages.Direction{messages.MasterToControl}, Permission: "core.ask"}, reason: `"core.ask"`},
		{name: "capitalised permission", define: request[messages.Empty, messages.Empty](),
			spec: messages.Spec{Name: "do", Links: []messages.Direction{messages.ControlToMaster}, Permission: "Core.Instance.Start"}, reason: `"Core.Instance.Start"`},
		{name: "empty permission segment", define: request[messages.Empty, messages.Empty](),
			spec: messages.Spec{Name: "do", Links: []messages.Direction{messages.ControlToMaster}, Permission: "core..start"}, reason: `"core..start"`},
		{name: "trailing dot permission", define: request[messages.Empty, messages.Empty](),
			spec: messages.Spec{Name: "do", Links: []messages.Direction{messages.ControlToMaster}, Permission: "core.start."}, reason: `"core.start."`},
		{name: "dashed permission", define: request[messages.Empty, messages.Empty](),
			spec: messages.Spec{Name: "do", Links: []messages.Direction{messages.ControlToMaster}, Permission: "core.instance-start"}, reason: `"core.instance-start"`},
		{name: "spaced permission", define: request[messages.Empty, messages.Empty](),
			spec: messages.Spec{Name: "do", Links: []messages.Direction{messages.ControlToMaster}, Permission: "core instance"}, reason: `"core instance"`},

		// forwardTo instance needs an integer instance_id in the Go type.
		{name: "forward to instance without instance_id", define: request[messages.Empty, messages.Empty](),
			spec: messages.Spec{Name: "fwd", Links: fwdInstanceLinks, ForwardTo: messages.Instance, Permission: "core.fwd"}, reason: "instance_id"},
		{name: "forward to instance with string instance_id", define: request[targetString, messages.Empty](),
			spec: messages.Spec{Name: "fwd", Links: fwdInstanceLinks, ForwardTo: messages.Instance, Permission: "core.fwd"}, reason: "instance_id"},
		{name: "forward to instance with float instance_id", define: request[targetFloat, messages.Empty](),
			spec: messages.Spec{Name: "fwd", Links: fwdInstanceLinks, ForwardTo: messages.Instance, Permission: "core.fwd"}, reason: "instance_id"},
		{name: "forward to instance with pointer instance_id", define: request[targetPointer, messages.Empty](),
			spec: messages.Spec{Name: "fwd", Links: fwdInstanceLinks, ForwardTo: messages.Instance, Permission: "core.fwd"}, reason: "instance_id"},
		{name: "forward to instance with untagged InstanceID", define: request[targetUntagged, messages.Empty](),
			spec: messages.Spec{Name: "fwd", Links: fwdInstanceLinks, ForwardTo: messages.Instance, Permission: "core.fwd"}, reason: "instance_id"},
		{name: "forward to instance with pointer payload", define: request[*target, messages.Empty](),
			spec: messages.Spec{Name: "fwd", Links: fwdInstanceLinks, ForwardTo: messages.Instance, Permission: "core.fwd"}, reason: "instance_id"},
		{name: "forwarded event without instance_id", define: event[messages.Empty](),
			spec: messages.Spec{Name: "fwd", Links: []messages.Direction{messages.SlaveToInstance}, ForwardTo: messages.Instance}, reason: "instance_id"},
		{name: "hand-written schema does not excuse the Go type", define: request[messages.Empty, messages.Empty](),
			spec: messages.Spec{Name: "fwd", Links: []messages.Direction{messages.SlaveToInstance}, ForwardTo: messages.Instance, Schema: `{"type":"object"}`}, reason: "instance_id"},

		// Routing chains.
		{name: "forward to instance from master, no master-slave", define: request[target, messages.Empty](),
			spec: messages.Spec{Name: "fwd", Links: []messages.Direction{messages.ControlToMaster}, ForwardTo: messages.Instance, Permission: "core.fwd"}, reason: "master-slave"},
		{name: "forward to instance from master, no slave-instance", define: request[target, messages.Empty](),
			spec: messages.Spec{Name: "fwd", Links: []messages.Direction{messages.ControlToMaster, messages.MasterToSlave}, ForwardTo: messages.Instance, Permission: "core.fwd"}, reason: "slave-instance"},
		{name: "forward to instance from slave, no slave-instance", define: event[target](),
			spec: messages.Spec{Name: "fwd", Links: []messages.Direction{messages.MasterToSlave}, ForwardTo: messages.Instance}, reason: "slave-instance"},
		{name: "forward to master from slave, no slave-master", define: event[messages.Empty](),
			spec: messages.Spec{Name: "fwd", Links: []messages.Direction{messages.InstanceToSlave}, ForwardTo: messages.Master}, reason: "slave-master"},
		{name: "forward request to master from slave, no slave-master", define: request[messages.Empty, messages.Empty](),
			spec: messages.Spec{Name: "fwd", Links: []messages.Direction{messages.InstanceToSlave}, ForwardTo: messages.Master}, reason: "slave-master"},
		{name: "broadcast without slave-instance", define: event[messages.Empty](),
			spec: messages.Spec{Name: "bc", Links: []messages.Direction{messages.MasterToSlave}, BroadcastTo: messages.Instance}, reason: "slave-instance"},
		{name: "broadcast from master without master-slave", define: event[messages.Empty](),
			spec: messages.Spec{Name: "bc", Links: []messages.Direction{messages.ControlToMaster, messages.SlaveToInstance}, BroadcastTo: messages.Instance, Permission: "bc.send"}, reason: "master-slave"},

		// Hand-written schemas.
		{name: "schema not JSON", define: event[messages.Empty](),
			spec: messages.Spec{Name: "hand", Links: []messages.Direction{messages.MasterToSlave}, Schema: `{"type": "object"`}, reason: "not valid JSON"},
		{name: "schema not JSON at all", define: event[messages.Empty](),
			spec: messages.Spec{Name: "hand", Links: []messages.Direction{messages.MasterToSlave}, Schema: `type: object`}, reason: "not valid JSON"},
		{name: "schema an array", define: event[messages.Empty](),
			spec: messages.Spec{Name: "hand", Links: []messages.Direction{messages.MasterToSlave}, Schema: `[{"type":"object"}]`}, reason: "object"},
		{name: "schema a string", define: event[messages.Empty](),
			spec: messages.Spec{Name: "hand", Links: []messages.Direction{messages.MasterToSlave}, Schema: `"object"`}, reason: "object"},
		{name: "schema false", define: event[messages.Empty](),
			spec: messages.Spec{Name: "hand", Links: []messages.Direction{messages.MasterToSlave}, Schema: `false`}, reason: "object"},
		{name: "schema unknown type", define: event[messages.Empty](),
			spec: messages.Spec{Name: "hand", Links: []messages.Direction{messages.MasterToSlave}, Schema: `{"type":"nonsense"}`}, reason: "/type"},
		{name: "schema negative minLength", define: event[messages.Empty](),
			spec: messages.Spec{Name: "hand", Links: []messages.Direction{messages.MasterToSlave}, Schema: `{"minLength":-1}`}, reason: "/minLength"},
		{name: "schema required not a list", define: event[messages.Empty](),
			spec: messages.Spec{Name: "hand", Links: []messages.Direction{messages.MasterToSlave}, Schema: `{"type":"object","required":"a"}`}, reason: "/required"},
		{name: "schema bad pattern", define: event[messages.Empty](),
			spec: messages.Spec{Name: "hand", Links: []messages.Direction{messages.MasterToSlave}, Schema: `{"type":"string","pattern":"("}`}, reason: "pattern"},
		{name: "response schema invalid", define: request[messages.Empty, messages.Empty](),
			spec: messages.Spec{Name: "hand", Links: []messages.Direction{messages.MasterToSlave}, ResponseSchema: `{"type":"nonsense"}`}, reason: "response schema"},
		{name: "forwarded schema not an object", define: request[target, messages.Empty](),
			spec: messages.Spec{Name: "hand", Links: []messages.Direction{messages.SlaveToInstance}, ForwardTo: messages.Instance, Schema: `[1]`}, reason: "object"},
		{name: "forwarded schema invalid", define: request[target, messages.Empty](),
			spec: messages.Spec{Name: "hand", Links: []messages.Direction{messages.SlaveToInstance}, ForwardTo: messages.Instance, Schema: `{"type":"nonsense"}`}, reason: "/type"},

		// Go types without a JSON Schema.
		{name: "chan payload", define: event[chan int](),
			spec: messages.Spec{Name: "go_type", Links: []messages.Direction{messages.MasterToSlave}}, reason: "chan"},
		{name: "chan field", define: event[withChan](),
			spec: messages.Spec{Name: "go_type", Links: []messages.Direction{messages.MasterToSlave}}, reason: "chan"},
		{name: "func payload", define: event[func()](),
			spec: messages.Spec{Name: "go_type", Links: []messages.Direction{messages.MasterToSlave}}, reason: "func"},
		{name: "map with int keys", define: event[withMapIntKey](),
			spec: messages.Spec{Name: "go_type", Links: []messages.Direction{messages.MasterToSlave}}, reason: "map[int]string"},
		{name: "complex number", define: event[withComplex](),
			spec: messages.Spec{Name: "go_type", Links: []messages.Direction{messages.MasterToSlave}}, reason: "complex128"},
		{name: "recursive struct", define: event[recursive](),
			spec: messages.Spec{Name: "go_type", Links: []messages.Direction{messages.MasterToSlave}}, reason: "recursive"},
		{name: "own MarshalJSON", define: event[ownJSON](),
			spec: messages.Spec{Name: "go_type", Links: []messages.Direction{messages.MasterToSlave}}, reason: "MarshalJSON"},
		{name: "own MarshalJSON on pointer receiver", define: event[withOwn](),
			spec: messages.Spec{Name: "go_type", Links: []messages.Direction{messages.MasterToSlave}}, reason: "MarshalJSON"},
		{name: "json string option", define: event[withStringOption](),
			spec: messages.Spec{Name: "go_type", Links: []messages.Direction{messages.MasterToSlave}}, reason: "string"},
		{name: "bad response type", define: request[messages.Empty, withChan](),
			spec: messages.Spec{Name: "go_type", Links: []messages.Direction{messages.MasterToSlave}}, reason: "response schema"},
		{name: "forwarded type with bad field", define: request[struct {
			ID int64    `json:"instance_id"`
			C  chan int `json:"c"`
		}, messages.Empty](),
			spec: messages.Spec{Name: "go_type", Links: []messages.Direction{messages.SlaveToInstance}, ForwardTo: messages.Instance}, reason: "chan"},

		// schema struct tags.
		{name: "tag minimum not a number", define: event[tagNotNumber](),
			spec: messages.Spec{Name: "tags", Links: []messages.Direction{messages.MasterToSlave}}, reason: "minimum"},
		{name: "tag negative minLength", define: event[tagNegativeCount](),
			spec: messages.Spec{Name: "tags", Links: []messages.Direction{messages.MasterToSlave}}, reason: "minLength"},
		{name: "tag unknown constraint", define: event[tagUnknown](),
			spec: messages.Spec{Name: "tags", Links: []messages.Direction{messages.MasterToSlave}}, reason: "colour"},
		{name: "tag without value", define: event[tagNoValue](),
			spec: messages.Spec{Name: "tags", Links: []messages.Direction{messages.MasterToSlave}}, reason: "minLength"},
		{name: "tag fractional count", define: event[tagFractionCount](),
			spec: messages.Spec{Name: "tags", Links: []messages.Direction{messages.MasterToSlave}}, reason: "maxItems"},
		{name: "tag bad pattern", define: event[tagBadPattern](),
			spec: messages.Spec{Name: "tags", Links: []messages.Direction{messages.MasterToSlave}}, reason: "pattern"},
		// A comma ends a constraint, so a pattern cannot contain one; it
		// must be refused, not silently cut short.
		{name: "tag pattern with comma", define: event[tagPatternComma](),
			spec: messages.Spec{Name: "tags", Links: []messages.Direction{messages.MasterToSlave}}, reason: "key=value"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.define(tc.spec)
			requireDefinitionError(t, err, tc.spec.Name, tc.reason)
			var ve *messages.ValidationError
			if errors.As(err, &ve) {
				t.Errorf("a definition error is a *ValidationError: %v", err)
			}
		})
	}
}

func TestDefinitionAccepts(t *testing.T) {
	tests := []struct {
		name   string
		define defineFunc
		spec   messages.Spec
	}{
		{name: "event on one link", define: event[messages.Empty](),
			spec: messages.Spec{Name: "tick", Links: []messages.Direction{messages.MasterToSlave}}},
		{name: "digits and underscores", define: event[messages.Empty](),
			spec: messages.Spec{Name: "v2_tick_3", Links: []messages.Direction{messages.MasterToSlave}}},
		{name: "plugin event", define: event[messages.Empty](),
			spec: messages.Spec{Name: "global_chat:chat", Links: []messages.Direction{messages.InstanceToSlave}}},
		{name: "unrestricted control request", define: request[messages.Empty, messages.Empty](),
			spec: messages.Spec{Name: "hello", Links: []messages.Direction{messages.ControlToMaster}, Permission: messages.Unrestricted}},
		{name: "plugin permission", define: request[messages.Empty, messages.Empty](),
			spec: messages.Spec{Name: "global_chat:mute", Links: []messages.Direction{messages.ControlToMaster}, Permission: "global_chat.mute"}},
		{name: "single-segment permission", define: request[messages.Empty, messages.Empty](),
			spec: messages.Spec{Name: "admin", Links: []messages.Direction{messages.ControlToMaster}, Permission: "admin"}},
		{name: "request on every link but control-master needs no permission", define: request[messages.Empty, messages.Empty](),
			spec: messages.Spec{Name: "hop", Links: []messages.Direction{messages.MasterToControl, messages.MasterToSlave, messages.SlaveToMaster, messages.SlaveToInstance, messages.InstanceToSlave}}},
		{name: "forward to instance, control to instance", define: request[target, messages.Empty](),
			spec: messages.Spec{Name: "fwd", Links: fwdInstanceLinks, ForwardTo: messages.Instance, Permission: "core.fwd"}},
		{name: "forward to instance, uint32 id", define: request[targetUint32, messages.Empty](),
			spec: messages.Spec{Name: "fwd", Links: fwdInstanceLinks, ForwardTo: messages.Instance, Permission: "core.fwd"}},
		{name: "forward to instance, id in embedded struct", define: request[targetEmbedded, messages.Empty](),
			spec: messages.Spec{Name: "fwd", Links: fwdInstanceLinks, ForwardTo: messages.Instance, Permission: "core.fwd"}},
		{name: "forward to instance, one hop", define: event[target](),
			spec: messages.Spec{Name: "fwd", Links: []messages.Direction{messages.SlaveToInstance}, ForwardTo: messages.Instance}},
		{name: "forward to master", define: request[messages.Empty, messages.Empty](),
			spec: messages.Spec{Name: "subspace_storage:get_storage", Links: []messages.Direction{messages.InstanceToSlave, messages.SlaveToMaster}, ForwardTo: messages.Master}},
		{name: "broadcast", define: event[messages.Empty](),
			spec: messages.Spec{Name: "research_sync:progress", Links: bcInstanceLinks, BroadcastTo: messages.Instance}},
		{name: "broadcast from slave only", define: event[messages.Empty](),
			spec: messages.Spec{Name: "local", Links: []messages.Direction{messages.SlaveToInstance}, BroadcastTo: messages.Instance}},
		{name: "global chat from the package doc", define: event[messages.Empty](),
			spec: messages.Spec{Name: "global_chat:chat", Links: []messages.Direction{messages.InstanceToSlave, messages.SlaveToMaster, messages.MasterToSlave, messages.SlaveToInstance, messages.ControlToMaster},
				ForwardTo: messages.Master, BroadcastTo: messages.Instance, Permission: "global_chat.chat"}},
		{name: "boolean true schema", define: event[any](),
			spec: messages.Spec{Name: "anything", Links: []messages.Direction{messages.MasterToSlave}, Schema: `true`}},
		{name: "forwarded hand-written schema already requiring instance_id", define: request[target, messages.Empty](),
			spec: messages.Spec{Name: "fwd", Links: []messages.Direction{messages.SlaveToInstance}, ForwardTo: messages.Instance,
				Schema: `{"type":"object","properties":{"instance_id":{"type":"integer"}},"required":["instance_id"]}`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.define(tc.spec); err != nil {
				t.Fatalf("define: %v", err)
			}
		})
	}
}

func TestMustPanicsOnDefinitionError(t *testing.T) {
	tests := []struct {
		name string
		must func()
		msg  string
	}{
		{name: "MustEvent bad name", msg: "BadName", must: func() {
			messages.MustEvent[messages.Empty](messages.Spec{Name: "BadName", Links: []messages.Direction{messages.MasterToSlave}})
		}},
		{name: "MustEvent no links", msg: "lonely", must: func() {
			messages.MustEvent[messages.Empty](messages.Spec{Name: "lonely"})
		}},
		{name: "MustEvent bad type", msg: "go_type", must: func() {
			messages.MustEvent[withChan](messages.Spec{Name: "go_type", Links: []messages.Direction{messages.MasterToSlave}})
		}},
		{name: "MustEvent bad schema", msg: "hand", must: func() {
			messages.MustEvent[messages.Empty](messages.Spec{Name: "hand", Links: []messages.Direction{messages.MasterToSlave}, Schema: `{"minLength":-1}`})
		}},
		{name: "MustRequest missing permission", msg: "list_things", must: func() {
			messages.MustRequest[messages.Empty, messages.Empty](messages.Spec{Name: "list_things", Links: []messages.Direction{messages.ControlToMaster}})
		}},
		{name: "MustRequest broadcast", msg: "bc", must: func() {
			messages.MustRequest[messages.Empty, messages.Empty](messages.Spec{Name: "bc", Links: bcInstanceLinks, BroadcastTo: messages.Instance})
		}},
		{name: "MustRequest forward without instance_id", msg: "fwd", must: func() {
			messages.MustRequest[messages.Empty, messages.Empty](messages.Spec{Name: "fwd", Links: []messages.Direction{messages.SlaveToInstance}, ForwardTo: messages.Instance})
		}},
		{name: "MustRequest bad response type", msg: "resp", must: func() {
			messages.MustRequest[messages.Empty, func()](messages.Spec{Name: "resp", Links: []messages.Direction{messages.MasterToSlave}})
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := mustPanic(t, tc.must)
			err, ok := v.(error)
			if !ok {
				t.Fatalf("panicked with %T %v; want an error", v, v)
			}
			requireDefinitionError(t, err, tc.msg, "")
		})
	}
}

func TestMustReturnsDefinition(t *testing.T) {
	r := messages.MustRequest[target, messages.Empty](messages.Spec{
		Name: "fwd", Links: fwdInstanceLinks, ForwardTo: messages.Instance, Permission: "core.fwd",
	})
	if r == nil || r.Name() != "fwd" || r.Kind() != messages.KindRequest {
		t.Fatalf("MustRequest = %v", r)
	}
	e := messages.MustEvent[messages.Empty](messages.Spec{Name: "tick", Links: []messages.Direction{messages.MasterToSlave}})
	if e == nil || e.Name() != "tick" || e.Kind() != messages.KindEvent {
		t.Fatalf("MustEvent = %v", e)
	}
}

func TestDefinitionAccessors(t *testing.T) {
	r, err := messages.NewRequest[target, messages.Empty](messages.Spec{
		Name:        "my_plugin:restart",
		Description: "Restart an instance.",
		Links:       []messages.Direction{messages.ControlToMaster, messages.MasterToSlave, messages.SlaveToInstance},
		Permission:  "my_plugin.restart",
		ForwardTo:   messages.Instance,
	})
	if err != nil {
		t.Fatal(err)
	}
	d := r.Def()
	if d != r.Definition || d.Def() != d {
		t.Error("Def() does not return the definition itself")
	}
	if got := d.Name(); got != "my_plugin:restart" {
		t.Errorf("Name() = %q", got)
	}
	if got := d.Plugin(); got != "my_plugin" {
		t.Errorf("Plugin() = %q; want my_plugin", got)
	}
	if got := d.Description(); got != "Restart an instance." {
		t.Errorf("Description() = %q", got)
	}
	if got := d.Kind(); got != messages.KindRequest {
		t.Errorf("Kind() = %v", got)
	}
	if got := d.Permission(); got != "my_plugin.restart" {
		t.Errorf("Permission() = %q", got)
	}
	if d.ForwardTo() != messages.Instance || d.BroadcastTo() != 0 {
		t.Errorf("ForwardTo, BroadcastTo = %v, %v", d.ForwardTo(), d.BroadcastTo())
	}
	want := []messages.Direction{
		{Source: messages.Control, Target: messages.Master},
		{Source: messages.Master, Target: messages.Slave},
		{Source: messages.Slave, Target: messages.Instance},
	}
	links := d.Links()
	if !slices.Equal(links, want) {
		t.Errorf("Links() = %v; want %v (in the order given)", links, want)
	}
	links[0] = messages.Direction{Source: messages.Instance, Target: messages.Slave}
	if !slices.Equal(d.Links(), want) {
		t.Error("changing the slice Links() returned changed the definition")
	}
	for _, dir := range want {
		if !d.ValidOn(dir) {
			t.Errorf("ValidOn(%v) = false", dir)
		}
	}
	for _, dir := range []messages.Direction{
		{Source: messages.Master, Target: messages.Control},
		{Source: messages.Instance, Target: messages.Slave},
		{Source: messages.Slave, Target: messages.Master},
	} {
		if d.ValidOn(dir) {
			t.Errorf("ValidOn(%v) = true", dir)
		}
	}
	if d.PayloadSchema() == nil || d.ResponseSchema() == nil {
		t.Error("a request lacks a payload or response schema")
	}

	e, err := messages.NewEvent[messages.Empty](messages.Spec{
		Name: "research_sync:progress", Links: bcInstanceLinks, BroadcastTo: messages.Instance,
	})
	if err != nil {
		t.Fatal(err)
	}
	if e.Kind() != messages.KindEvent || e.BroadcastTo() != messages.Instance || e.ForwardTo() != 0 {
		t.Errorf("Kind, BroadcastTo, ForwardTo = %v, %v, %v", e.Kind(), e.BroadcastTo(), e.ForwardTo())
	}
	if e.Permission() != "" || e.Description() != "" {
		t.Errorf("Permission, Description = %q, %q; want empty", e.Permission(), e.Description())
	}
	if e.ResponseSchema() != nil {
		t.Error("an event has a response schema")
	}
	if e.PayloadSchema() == nil {
		t.Error("an event has no payload schema")
	}
	if got := messages.Ping.Plugin(); got != "" {
		t.Errorf("Ping.Plugin() = %q; want empty", got)
	}
}

func TestKindString(t *testing.T) {
	tests := []struct {
		name string
		kind messages.Kind
		want string
	}{
		{name: "request", kind: messages.KindRequest, want: "request"},
		{name: "event", kind: messages.KindEvent, want: "event"},
		{name: "zero", kind: 0, want: "Kind(0)"},
		{name: "unknown", kind: 7, want: "Kind(7)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.kind.String(); got != tc.want {
				t.Errorf("String() = %q; want %q", got, tc.want)
			}
		})
	}
}

// A definition error is one line that starts with the package's sentinel
// and then names the message, so a log line points at the culprit.
func TestDefinitionErrorForm(t *testing.T) {
	_, err := messages.NewEvent[messages.Empty](messages.Spec{Name: "Bad", Links: []messages.Direction{messages.MasterToSlave}})
	if err == nil {
		t.Fatal("no error")
	}
	if !strings.HasPrefix(err.Error(), messages.ErrDefinition.Error()+`: message "Bad": `) {
		t.Errorf("error %q does not begin with the sentinel and the message name", err)
	}
	if strings.Contains(err.Error(), "\n") {
		t.Errorf("error %q spans lines", err)
	}
}
