// Serve fauxqs (a fast SQS-compatible server) on 127.0.0.1 only: its own CLI binds 0.0.0.0.
// Started by actionrunner.local.LocalAWS. Environment:
//   FAUXQS_DIR   the folder fauxqs was installed into (npm install --prefix FAUXQS_DIR fauxqs)
//   FAUXQS_PORT  port (default 5056);  FAUXQS_REGION  region (default us-east-1)
// Queue URLs are http://127.0.0.1:PORT/000000000000/NAME (taken from the request's Host header).
import { pathToFileURL } from "node:url";
import { join } from "node:path";

const dir = process.env.FAUXQS_DIR;
const dist = join(dir, "node_modules", "fauxqs", "dist");
const { buildApp } = await import(pathToFileURL(join(dist, "app.js")).href);
const { SqsStore } = await import(pathToFileURL(join(dist, "sqs", "sqsStore.js")).href);

const port = parseInt(process.env.FAUXQS_PORT ?? "5056", 10);
const region = process.env.FAUXQS_REGION ?? "us-east-1";
const sqsStore = new SqsStore();
sqsStore.host = ""; // falsy: queue URLs use the request's Host header (127.0.0.1:PORT)
sqsStore.region = region;
const app = buildApp({ logger: false, defaultRegion: region, stores: { sqsStore } });
const address = await app.listen({ port, host: "127.0.0.1" });
console.log(`fauxqs ready on ${address}`);
for (const sig of ["SIGTERM", "SIGINT"]) {
  process.on(sig, async () => { await app.close(); process.exit(0); });
}
