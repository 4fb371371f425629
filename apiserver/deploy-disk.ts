// deployVirtualMachine's diskofferingid: as CloudStack, a data disk from that offering (of `size`
// GiB when the offering has none) is made with the VM and attached to it. The Volume is created
// first, so a name that is taken fails the deploy before a VM exists that would use someone else's.
import { Resources, type Volume } from "../crds/index.ts";
import { isAlreadyExists, isNotFound } from "../runtime/client.ts";
import type { Call } from "./api.ts";
import { ApiError, ERROR } from "./envelope.ts";
import { byId } from "./listing.ts";

export interface DeployDataDisk {
  /** The VM's dataVolumes entry. */
  slot: { name: string; volume: string };
  /** Undoes the create when the VM could not be made. */
  remove(): Promise<void>;
}

/** The data disk the deploy asks for, created now; undefined without diskofferingid. */
export async function createDeployDataDisk(
  call: Call,
  vmName: string,
  zone: string,
): Promise<DeployDataDisk | undefined> {
  const { params, api } = call;
  if (params.get("diskofferingid") === undefined) return undefined;
  const offering = byId(api.diskOfferings, call, "diskofferingid");
  const size = params.integer("size");
  if (size !== undefined && size < 1) throw new ApiError(ERROR.PARAM, `Invalid parameter size value=${size}`);
  if (!offering.spec.size && !size)
    throw new ApiError(
      ERROR.PARAM,
      `Disk offering ${offering.metadata.name} is customized: deployVirtualMachine needs the data disk's size (size=<GiB>)`,
    );
  const name = `${vmName}-data`;
  const namespace = call.caller.account;
  await call.caller.client
    .create<Volume>(Resources.volumes, {
      apiVersion: "stratus.io/v1alpha1",
      kind: "Volume",
      metadata: { name, namespace, annotations: { "stratus.io/created-by": "cloudstack-api" } },
      spec: {
        zone,
        type: "DATADISK",
        // The offering's own size wins, as CloudStack ignores size for a fixed-size offering.
        ...(offering.spec.size ? {} : { size: `${size}Gi` }),
        diskOffering: offering.metadata.name as string,
      },
    })
    .catch((error: unknown) => {
      if (isAlreadyExists(error))
        throw new ApiError(
          ERROR.PARAM,
          `Unable to create the VM's data disk: a volume named ${name} already exists`,
        );
      throw error;
    });
  return {
    slot: { name: "data1", volume: name },
    remove: () =>
      call.caller.client.delete(Resources.volumes, name, namespace).then(
        () => undefined,
        (error: unknown) => {
          if (!isNotFound(error)) throw error;
        },
      ),
  };
}
