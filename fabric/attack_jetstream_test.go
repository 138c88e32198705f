package fabric_test

import (
	"testing"
)

// TestAttackJetStreamRefused: a slave's or a control's credentials can
// neither read nor write the master's buckets, nor use the JetStream API.
func TestAttackJetStreamRefused(t *testing.T) {
	b := startSecureBroker(t, nil)
	newSecureCluster(t, b, "*=*")
	asMaster := b.spy(t, "master")
	for _, user := range []string{"slave-1", "control-alice"} {
		s := b.spy(t, user)
		inbox := inboxOf(user) + ".js"
		for _, subject := range []string{
			"$KV.lf_master.term",
			"$KV.lf_master_lease.active",
			"$KV.lf_master.instance.11",
			"$JS.API.INFO",
			"$JS.API.STREAM.INFO.KV_lf_master",
			"$JS.API.STREAM.PURGE.KV_lf_master",
			"$JS.API.STREAM.DELETE.KV_lf_master_lease",
			"$JS.API.DIRECT.GET.KV_lf_master_lease.$KV.lf_master_lease.active",
			"$JS.API.CONSUMER.CREATE.KV_lf_master",
			"$JS.API.STREAM.CREATE.evil",
		} {
			s.tryPublish(t, asMaster, subject, inbox, `{"v":1,"term":999}`)
		}
		for _, subject := range []string{"$KV.lf_master.>", "$JS.>", "$JS.API.>", "lf._inbox.master.0.>"} {
			sub := s.trySubscribe(t, subject)
			defer s.nothingOn(t, sub)
		}
	}
}
