package fabric

import (
	"context"
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
	}, extra...)
	return lfnats.Connect(ctx, self, opts...)
}
