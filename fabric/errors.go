package fabric

import "github.com/linkfabric/linkfabric/link"

// The fabric's error codes, added to the link's. They reach a requester
// however many hops away the error arose.
const (
	// CodeInstanceNotFound: no instance has the id.
	CodeInstanceNotFound link.Code = "instance_not_found"
	// CodeInstanceNotAssigned: the instance exists but no slave hosts it.
	CodeInstanceNotAssigned link.Code = "instance_not_assigned"
	// CodeSlaveNotFound: no slave has the id the request names; the
	// master knows every slave that has ever registered with it (its
	// state keeps them).
	CodeSlaveNotFound link.Code = "slave_not_found"
	// CodeSlaveNotConnected: the slave that hosts the instance, or that
	// the request names, is not connected: the master has not heard from
	// it for the peer timeout, or nothing listens for it any more (a
	// killed process). The request did not reach the slave.
	CodeSlaveNotConnected link.Code = "slave_not_connected"
	// CodeInstanceNotRunning: the instance is hosted but not running.
	CodeInstanceNotRunning link.Code = "instance_not_running"
	// CodeAlreadyConnected: a slave with this id is connected from
	// another process.
	CodeAlreadyConnected link.Code = "already_connected"
	// CodeNotRegistered: a slave spoke before registering.
	CodeNotRegistered link.Code = "not_registered"
	// CodeSlaveShuttingDown: the slave is shutting down and starts
	// nothing; the request certainly did not run.
	CodeSlaveShuttingDown link.Code = "slave_shutting_down"
	// CodeConflict: the request contradicts the cluster's state, such as
	// assigning an instance that another slave hosts.
	CodeConflict link.Code = "conflict"
	// CodeProgramNotAllowed: the instance runs a program that its slave's
	// allow-list (FABRIC_SLAVE_ALLOW_PROGRAMS) does not name; nothing was
	// run.
	CodeProgramNotAllowed link.Code = "program_not_allowed"
	// CodeProgramFailed: the instance's program could not be started, or
	// does not read its standard input.
	CodeProgramFailed link.Code = "program_failed"
	// CodeInvalidCommand: a command for a program holds a line break,
	// which would make it more than one line of input.
	CodeInvalidCommand link.Code = "invalid_command"
	// CodeMasterStarting: the master has just become active and has not
	// heard from every slave it knows yet; the request certainly did not
	// run. It waits (a bounded time) before it says so.
	CodeMasterStarting link.Code = "master_starting"
	// CodePluginMissing: the endpoint an addressed request is for does
	// not have the request's plugin; the request did not reach it.
	CodePluginMissing link.Code = "plugin_missing"
	// CodeControlNotConnected: no control of the user an addressed
	// request is for is linked to the master; it reached no one.
	CodeControlNotConnected link.Code = "control_not_connected"
)
