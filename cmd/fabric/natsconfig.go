package main

import (
	"errors"
	"strings"

	"github.com/spf13/cobra"

	"github.com/linkfabric/linkfabric/internal/natsauth"
	"github.com/linkfabric/linkfabric/messages"
)

const natsConfigLong = `Print the authorization block of a nats-server configuration that gives the
master, each slave and each control its own NATS user, allowed to publish and
subscribe only the subjects of its own links: a slave cannot speak as the
master or as another slave, nor read anyone else's traffic or replies; a
control can only talk to the master, as itself. The permissions come from the
message catalog (fabric messages). Put the block in nats-server's
configuration file (or include it from there) and restart the server.

Users are named master, slave-<id> and control-<user>. By default each
logs in with a password that nats-server reads from its environment
($LF_PASS_MASTER, $LF_PASS_SLAVE_1, $LF_PASS_CONTROL_ALICE, ...; best set to
bcrypt hashes); each endpoint sets FABRIC_NATS_USER and FABRIC_NATS_PASSWORD.
With --nkeys DIR each logs in with an nkey instead: the seed of user U is
read from DIR/U.nk, or generated there (mode 0600) if missing, and the
endpoint sets FABRIC_NATS_NKEY_SEED_FILE to it. The block's comment header
lists what each endpoint sets.

Examples:
  fabric nats-config --slaves 1-20 --controls alice,bob > auth.conf
  fabric nats-config --slaves 1,2 --controls ops --nkeys /etc/linkfabric/nkeys
`

func (a *app) natsConfigCommand() *cobra.Command {
	var slaves, controls, prefix, envPrefix, nkeyDir string
	cmd := &cobra.Command{
		Use:   "nats-config",
		Short: "Print nats-server users and permissions, one per endpoint",
		Long:  natsConfigLong,
		Args:  argsBetween(0, 0, ""),
		RunE: a.do(func(*cobra.Command, []string) error {
			return a.natsConfig(slaves, controls, prefix, envPrefix, nkeyDir)
		}),
	}
	fs := cmd.Flags()
	fs.StringVar(&slaves, "slaves", "", "slave ids, comma-separated, with ranges: 1,2,5-8")
	fs.StringVar(&controls, "controls", "", "control user names (FABRIC_CONTROL_USER), comma-separated: alice,bob")
	fs.StringVar(&prefix, "prefix", envOr(a.environ, "FABRIC_SUBJECT_PREFIX", "lf"), "the subject prefix (FABRIC_SUBJECT_PREFIX)")
	fs.StringVar(&envPrefix, "env-prefix", natsauth.DefaultEnvPrefix, "what the names of the password variables start with")
	fs.StringVar(&nkeyDir, "nkeys", "", "log in with nkeys whose seeds are in (or are generated into) this directory")
	return cmd
}

func (a *app) natsConfig(slaves, controls, prefix, envPrefix, nkeyDir string) error {
	o := natsauth.Options{Prefix: prefix, EnvPrefix: envPrefix, NKeyDir: nkeyDir}
	var err error
	if o.Slaves, err = natsauth.ParseSlaves(slaves); err != nil {
		return usagef("nats-config: --slaves: %v", err)
	}
	if o.Controls, err = natsauth.ParseControls(controls); err != nil {
		return usagef("nats-config: --controls: %v", err)
	}
	if o.Catalog, err = messages.NewCatalog(); err != nil {
		return err
	}
	text, _, err := natsauth.Generate(o)
	if err != nil {
		var oe *natsauth.OptionError
		if errors.As(err, &oe) {
			return usagef("nats-config: %s", oe.Msg)
		}
		return err // an nkey seed file that cannot be read or written
	}
	_, err = a.stdout.Write([]byte(text))
	return err
}

// envOr returns the value of variable name in environ, or def if it is
// not set or empty.
func envOr(environ []string, name, def string) string {
	for _, kv := range environ {
		if v, ok := strings.CutPrefix(kv, name+"="); ok && v != "" {
			return v
		}
	}
	return def
}
