package fabric

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	natsgo "github.com/nats-io/nats.go"

	lfnats "github.com/linkfabric/linkfabric/connector/nats"
	"github.com/linkfabric/linkfabric/link"
)

// natsOptions returns the nats.go options of an endpoint's credentials,
// TLS and pings.
func natsOptions(c NATSConfig) ([]natsgo.Option, error) {
	opts := []natsgo.Option{
		natsgo.PingInterval(c.PingInterval),
		natsgo.MaxPingsOutstanding(2),
	}
	switch {
	case c.User != "":
		opts = append(opts, natsgo.UserInfo(c.User, c.Password))
	case c.Token != "":
		opts = append(opts, natsgo.Token(c.Token))
	case c.NKeySeedFile != "":
		opt, err := natsgo.NkeyOptionFromSeed(c.NKeySeedFile)
		if err != nil {
			return nil, fmt.Errorf("%w: FABRIC_NATS_NKEY_SEED_FILE=%q: %v", ErrConfig, c.NKeySeedFile, err)
		}
		opts = append(opts, opt)
	case c.CredsFile != "":
		opts = append(opts, natsgo.UserCredentials(c.CredsFile))
	}
	if c.TLSCAFile != "" {
		opts = append(opts, natsgo.RootCAs(c.TLSCAFile))
	}
	if c.TLSCertFile != "" {
		opts = append(opts, natsgo.ClientCert(c.TLSCertFile, c.TLSKeyFile))
	}
	return opts, nil
}

func splitURLs(url string) []string {
	var urls []string
	for _, u := range strings.Split(url, ",") {
		urls = append(urls, strings.TrimSpace(u))
	}
	return urls
}

// connect connects an endpoint to NATS as configured.
func connect(ctx context.Context, self link.Address, c NATSConfig, url string, log *slog.Logger, extra ...lfnats.Option) (*lfnats.Node, error) {
	natsOpts, err := natsOptions(c)
	if err != nil {
		return nil, err
	}
	opts := append([]lfnats.Option{
		lfnats.WithURLs(splitURLs(url)...),
		lfnats.WithPrefix(c.Prefix),
		lfnats.WithLogger(log),
		lfnats.WithNATSOptions(natsOpts...),
	}, extra...)
	return lfnats.Connect(ctx, self, opts...)
}

// connectJetStream makes the master's connection for JetStream (its state
// and its lease): the master's credentials, and its inbox prefix, since
// JetStream answers on the requester's inbox. It waits for the first
// connection as long as ctx allows, and reconnects for ever afterwards.
func connectJetStream(ctx context.Context, c NATSConfig, url string, log *slog.Logger) (*natsgo.Conn, error) {
	opts, err := natsOptions(c)
	if err != nil {
		return nil, err
	}
	connected := make(chan struct{})
	refused := make(chan error, 1)
	var once sync.Once
	opts = append(opts,
		natsgo.Name("linkfabric master/0 state"),
		natsgo.CustomInboxPrefix(lfnats.InboxPrefix(c.Prefix, link.MasterAddress)),
		natsgo.MaxReconnects(-1),
		natsgo.ReconnectWait(250*time.Millisecond),
		natsgo.ReconnectJitter(250*time.Millisecond, time.Second),
		natsgo.RetryOnFailedConnect(true),
		natsgo.ConnectHandler(func(*natsgo.Conn) { once.Do(func() { close(connected) }) }),
		natsgo.DisconnectErrHandler(func(_ *natsgo.Conn, err error) {
			if err != nil {
				log.Warn("state connection to NATS lost", "error", err)
			}
		}),
		natsgo.ReconnectHandler(func(nc *natsgo.Conn) {
			log.Info("state connection to NATS back", "server", nc.ConnectedUrlRedacted())
		}),
		natsgo.ReconnectErrHandler(func(_ *natsgo.Conn, err error) {
			if isAuthError(err) {
				select {
				case refused <- err:
				default:
				}
			}
		}),
	)
	nc, err := natsgo.Connect(strings.Join(splitURLs(url), ","), opts...)
	if err != nil {
		return nil, fmt.Errorf("fabric: connect to NATS: %w", err)
	}
	if nc.IsConnected() {
		return nc, nil
	}
	select {
	case <-connected:
		return nc, nil
	case err = <-refused:
	case <-ctx.Done():
	case <-time.After(5 * time.Second):
	}
	if err == nil {
		err = nc.LastError()
	}
	nc.Close()
	if isAuthError(err) {
		return nil, fmt.Errorf("nats: the server refused the credentials: %w", err)
	}
	return nil, fmt.Errorf("fabric: NATS at %s is not reachable: %v", url, err)
}

// isAuthError reports whether err is the server refusing the credentials.
func isAuthError(err error) bool {
	return err != nil && (errors.Is(err, natsgo.ErrAuthorization) || strings.Contains(strings.ToLower(err.Error()), "authorization violation"))
}
