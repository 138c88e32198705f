// A Linkfabric control client in JavaScript, with the nats package alone:
// what docs/protocol.md tells a client author, put to work against a
// running cluster (fabric dev). It acts as control user "js" and
//
//   pings the master, lists the slaves and instances,
//   starts instance 101 and runs a command on it,
//   reads a failure (Lf-Error) as a code and a text,
//   follows instance 101's output, then stops following it.
//
// Usage: node client.mjs [NATS_URL]   (default: $FABRIC_NATS_URL, else
// nats://127.0.0.1:4222). Exit status 0 when every step did what the
// protocol says, 1 otherwise.

import { connect, headers, JSONCodec } from "nats";

const url = process.argv[2] || process.env.FABRIC_NATS_URL || "nats://127.0.0.1:4222";
const prefix = process.env.FABRIC_SUBJECT_PREFIX || "lf";
const user = "js";
const jc = JSONCodec();

// A request from control `user` to the master: the subject names the
// sender, then the receiver, then the message type.
const subject = (type) => `${prefix}.control.${user}.master.0.${type}`;

// FabricError is a failed request: its stable code and its text.
class FabricError extends Error {
  constructor(code, message) {
    super(`${message} (${code})`);
    this.code = code;
  }
}

// request sends payload as a message of the given type and returns the
// response's JSON, or throws a FabricError with the code of Lf-Error.
async function request(nc, type, payload, timeoutMs = 5000) {
  const h = headers();
  h.set("Lf-Timeout", String(timeoutMs)); // how long the master may take
  const msg = await nc.request(subject(type), jc.encode(payload), { timeout: timeoutMs + 1000, headers: h });
  const code = msg.headers?.get("Lf-Error");
  if (code) {
    throw new FabricError(code, new TextDecoder().decode(msg.data));
  }
  return jc.decode(msg.data);
}

function check(ok, what) {
  if (!ok) {
    throw new Error(`not as the protocol says: ${what}`);
  }
  console.log(`ok: ${what}`);
}

async function main() {
  // Replies come to this identity's own inbox, which a broker that
  // enforces identities (fabric nats-config) lets only this user read.
  const nc = await connect({ servers: url.split(","), inboxPrefix: `${prefix}._inbox.control.${user}`, name: `linkfabric js control ${user}` });
  try {
    check(JSON.stringify(await request(nc, "ping", {})) === "{}", "ping answers {}");

    const { slaves } = await request(nc, "list_slaves", {});
    check(slaves.length > 0 && slaves.every((s) => typeof s.slave_id === "number" && typeof s.connected === "boolean"), `list_slaves: ${slaves.length} slaves`);

    const { instances } = await request(nc, "list_instances", {});
    check(instances.some((i) => i.instance_id === 101), "list_instances has instance 101");

    await request(nc, "start_instance", { instance_id: 101 });
    const { output } = await request(nc, "send_command", { instance_id: 101, command: "/join js" });
    check(output === "js joined", `send_command answers ${JSON.stringify(output)}`);

    try {
      await request(nc, "send_command", { instance_id: 999, command: "/players" });
      check(false, "a command for instance 999 fails");
    } catch (e) {
      check(e instanceof FabricError && e.code === "instance_not_found", `a command for instance 999 fails with ${e.code}: ${e.message}`);
    }
    try {
      await request(nc, "start_instance", { instance_id: "101" });
      check(false, "a payload that breaks the schema fails");
    } catch (e) {
      check(e instanceof FabricError && e.code === "invalid_message", `a payload that breaks the schema fails with ${e.code}`);
    }
    try {
      // Instance ids are at most 2^53-1 (Number.MAX_SAFE_INTEGER): every id
      // the fabric gives out or takes reads exactly as a JavaScript number.
      await request(nc, "start_instance", { instance_id: Number.MAX_SAFE_INTEGER + 1 });
      check(false, "an instance id past 2^53-1 fails");
    } catch (e) {
      check(e instanceof FabricError && e.code === "invalid_message", `an instance id past 2^53-1 fails with ${e.code}`);
    }

    // Following: the master sends instance_output events to this control
    // once asked; each request replaces the list, and [] stops.
    const sub = nc.subscribe(`${prefix}.master.0.control.${user}.>`);
    const heard = (async () => {
      for await (const m of sub) {
        const type = m.subject.split(".")[5]; // prefix, src type, src id, dst type, dst id, type
        const line = jc.decode(m.data);
        if (type === "instance_output" && line.instance_id === 101 && line.message === "[server] hello from js") {
          return line;
        }
      }
      return null;
    })();
    await request(nc, "set_instance_output_subscriptions", { instance_ids: [101] });
    await request(nc, "send_command", { instance_id: 101, command: "/say hello from js" });
    const timer = setTimeout(() => sub.unsubscribe(), 5000);
    const line = await heard;
    clearTimeout(timer);
    check(line !== null && typeof line.time === "number" && line.level === "info", "instance_output relayed while following 101");
    await request(nc, "set_instance_output_subscriptions", { instance_ids: [] });
    check(true, "following stopped");

    await request(nc, "send_command", { instance_id: 101, command: "/leave js" });
  } finally {
    await nc.drain();
  }
}

main().catch((e) => {
  console.error(`error: ${e.message}`);
  process.exit(1);
});
