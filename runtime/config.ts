// Where a Stratus process finds the API server: --kubeconfig, else $KUBECONFIG, else the
// in-cluster service account (a Pod of a Deployment or DaemonSet).
import { KubeConfig } from "@kubernetes/client-node";

export function kubeConfigFrom(path: string | undefined, env: NodeJS.ProcessEnv = process.env): KubeConfig {
  const kubeConfig = new KubeConfig();
  const file = path ?? env.KUBECONFIG;
  if (file) kubeConfig.loadFromFile(file);
  else kubeConfig.loadFromCluster();
  return kubeConfig;
}
