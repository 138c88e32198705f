package fabric

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	natsgo "github.com/nats-io/nats.go"

	lfnats "github.com/linkfabric/linkfabric/connector/nats"
	"github.com/linkfabric/linkfabric/link"
)

// connect connects an endpoint to NATS as configured.
func connect(ctx context.Context, self link.Address, c NATSConfig, url string, log *slog.Logger, extra ...lfnats.Option) (*lfnats.Node, error) {
	natsOpts := []natsgo.Option{
		natsgo.PingInterval(c.PingInterval),
		natsgo.MaxPingsOutstanding(2),
	}
	switch {
	case c.User != "":
		natsOpts = append(natsOpts, natsgo.UserInfo(c.User, c.Password))
	case c.Token != "":
		natsOpts = append(natsOpts, natsgo.Token(c.Token))
	case c.NKeySeedFile != "":
		opt, err := natsgo.NkeyOptionFromSeed(c.NKeySeedFile)
		if err != nil {
			return nil, fmt.Errorf("%w: FABRIC_NATS_NKEY_SEED_FILE=%q: %v", ErrConfig, c.NKeySeedFile, err)
		}
		natsOpts = append(natsOpts, opt)
	case c.CredsFile != "":
		natsOpts = append(natsOpts, natsgo.UserCredentials(c.CredsFile))
	}
	if c.TLSCAFile != "" {
		natsOpts = append(natsOpts, natsgo.RootCAs(c.TLSCAFile))
	}
	if c.TLSCertFile != "" {
		natsOpts = append(natsOpts, natsgo.ClientCert(c.TLSCertFile, c.TLSKeyFile))
	}
	var urls []string
	for _, u := range strings.Split(url, ",") {
		urls = append(urls, strings.TrimSpace(u))
	}
	opts := append([]lfnats.Option{
		lfnats.WithURLs(urls...),
		lfnats.WithPrefix(c.Prefix),
		lfnats.WithLogger(log),
		lfnats.WithNATSOptions(natsOpts...),
		lfnats.WithHint(hint),
	}, extra...)
	return lfnats.Connect(ctx, self, opts...)
}

// hint names the settings behind a mistake the connector reports at
// start-up.
func hint(kind error) string {
	switch {
	case errors.Is(kind, lfnats.ErrCredentials):
		return "FABRIC_NATS_USER and FABRIC_NATS_PASSWORD, FABRIC_NATS_TOKEN, FABRIC_NATS_NKEY_SEED_FILE or FABRIC_NATS_CREDS_FILE"
	case errors.Is(kind, lfnats.ErrNotAllowed):
		return "do FABRIC_SLAVE_ID or FABRIC_CONTROL_USER match the credentials?"
	case errors.Is(kind, lfnats.ErrTLSUntrusted):
		return "FABRIC_NATS_TLS_CA_FILE must name the CA that signs it"
	case errors.Is(kind, lfnats.ErrTLSMismatch):
		return "FABRIC_NATS_TLS_*, tls:// URLs"
	case errors.Is(kind, lfnats.ErrTLSRefused):
		return "check the client certificate (FABRIC_NATS_TLS_CERT_FILE, FABRIC_NATS_TLS_KEY_FILE) and the CA (FABRIC_NATS_TLS_CA_FILE)"
	}
	return ""
}
