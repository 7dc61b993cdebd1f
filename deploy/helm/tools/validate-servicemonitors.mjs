// Validates ServiceMonitor objects (a JSON array on stdin) with the validators that
// @kubernetes-models/prometheus-operator generates from the prometheus-operator CRD schema.
// Exit 1 with one line per invalid object.
import { readFileSync } from "node:fs";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";

const objects = JSON.parse(readFileSync(0, "utf8"));
let failed = 0;
for (const obj of objects) {
  try {
    new ServiceMonitor(obj).validate();
  } catch (e) {
    failed++;
    console.log(`ServiceMonitor/${obj?.metadata?.name}: ${e.message}`);
  }
}
process.exit(failed ? 1 : 0);
