// TimescaleDB in PGlite, served on 127.0.0.1 over the Postgres wire protocol.
//
//   node server.mjs [PORT]      prints "listening PORT" once ready; stops on SIGTERM
//
// Messages are framed here and handed to PGlite whole: the stock socket server passes raw TCP
// chunks, which breaks COPY. A COPY ... FROM STDIN is answered with CopyInResponse here, its
// CopyData are gathered until CopyDone, and the whole sequence goes to execProtocolRaw in one
// call. PGlite has one session: connections share it, so a test uses them one at a time.
import net from "node:net";
import { PGlite } from "@electric-sql/pglite";
import { timescaledb } from "@electric-sql/pglite/timescaledb";

const db = await PGlite.create({ extensions: { timescaledb } });
let turn = Promise.resolve();
function exec(message) {
  const answer = turn.then(() => db.execProtocolRaw(message));
  turn = answer.catch(() => {});
  return answer.then((bytes) => Buffer.from(bytes));
}

function withoutCopyIn(bytes) {
  const parts = [];
  for (let at = 0; at < bytes.length; ) {
    const end = at + 1 + bytes.readInt32BE(at + 1);
    if (bytes[at] !== 0x47) parts.push(bytes.subarray(at, end)); // 'G' was sent already
    at = end;
  }
  return Buffer.concat(parts);
}

const COPY_IN = /^\s*copy\b[\s\S]*\bfrom\s+stdin/i;

function serve(socket) {
  let pending = Buffer.alloc(0);
  let started = false;
  let copy = null;
  let work = Promise.resolve();

  async function drain() {
    for (;;) {
      if (!started) {
        if (pending.length < 8) return;
        const length = pending.readInt32BE(0);
        if (pending.length < length) return;
        const message = Buffer.from(pending.subarray(0, length));
        pending = pending.subarray(length);
        const code = message.readInt32BE(4);
        if (code === 80877103 || code === 80877104) {
          socket.write("N"); // no SSL, no GSS encryption
          continue;
        }
        started = true;
        socket.write(await exec(message));
        continue;
      }
      if (pending.length < 5) return;
      const length = pending.readInt32BE(1);
      if (pending.length < length + 1) return;
      const message = Buffer.from(pending.subarray(0, length + 1));
      pending = pending.subarray(length + 1);
      const type = String.fromCharCode(message[0]);
      if (copy !== null) {
        copy.push(message);
        if (type === "c" || type === "f") {
          const answer = await exec(Buffer.concat(copy));
          copy = null;
          socket.write(withoutCopyIn(answer));
        }
        continue;
      }
      if (type === "X") {
        socket.end();
        return;
      }
      if (type === "Q" && COPY_IN.test(message.subarray(5, message.length - 1).toString())) {
        copy = [message];
        const binary = /\bbinary\b/i.test(message.toString()) ? 1 : 0;
        const response = Buffer.alloc(8);
        response.write("G", 0);
        response.writeInt32BE(7, 1);
        response.writeInt8(binary, 5);
        response.writeInt16BE(0, 6);
        socket.write(response);
        continue;
      }
      socket.write(await exec(message));
    }
  }

  socket.on("data", (chunk) => {
    pending = Buffer.concat([pending, chunk]);
    work = work.then(drain).catch((error) => {
      console.error(error);
      socket.destroy();
    });
  });
  socket.on("error", () => socket.destroy());
}

const server = net.createServer(serve);
server.listen(Number(process.argv[2] ?? 0), "127.0.0.1", () => {
  console.log(`listening ${server.address().port}`);
});
process.on("SIGTERM", async () => {
  server.close();
  await db.close();
  process.exit(0);
});
