// Validates custom resources against the schemas of their operators' CRDs, as compiled into the
// @kubernetes-models packages (KEDA, CloudNativePG, Prometheus operator). Reads a JSON array of objects on
// stdin, prints a JSON array of {kind, name, errors} (errors null when the kind is unknown here).
import { readFileSync } from "node:fs";

const models = {
  "keda.sh/v1alpha1/ScaledObject": ["@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject", "ScaledObject"],
  "keda.sh/v1alpha1/TriggerAuthentication": ["@kubernetes-models/keda/keda.sh/v1alpha1/TriggerAuthentication", "TriggerAuthentication"],
  "postgresql.cnpg.io/v1/Cluster": ["@kubernetes-models/cloudnative-pg/postgresql.cnpg.io/v1/Cluster", "Cluster"],
  "postgresql.cnpg.io/v1/ScheduledBackup": ["@kubernetes-models/cloudnative-pg/postgresql.cnpg.io/v1/ScheduledBackup", "ScheduledBackup"],
  "monitoring.coreos.com/v1/ServiceMonitor": ["@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor", "ServiceMonitor"],
  "monitoring.coreos.com/v1/PrometheusRule": ["@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule", "PrometheusRule"],
};

const objects = JSON.parse(readFileSync(0, "utf8"));
const results = [];
for (const obj of objects) {
  const key = `${obj.apiVersion}/${obj.kind}`;
  const name = obj.metadata?.name;
  if (!(key in models)) {
    results.push({ kind: key, name, errors: null });
    continue;
  }
  const [module, className] = models[key];
  const Model = (await import(module))[className];
  try {
    new Model(obj).validate();
    results.push({ kind: key, name, errors: [] });
  } catch (err) {
    results.push({ kind: key, name, errors: [String(err.message ?? err)] });
  }
}
process.stdout.write(JSON.stringify(results));
