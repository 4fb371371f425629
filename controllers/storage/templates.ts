// Storage's share of Templates (template-zones.ts decides): which host of each zone downloads a URL
// template onto the zone's secondary storage, a new one when that host is lost before it is done,
// and on deletion, once no VM or volume uses the template, the removal of its images, then the
// template-images finalizer.
import { TEMPLATE_IMAGES_FINALIZER } from "../../crds/finalizers.ts";
import {
  type Host,
  Resources,
  type Template,
  type VirtualMachine,
  type Volume,
  type Zone,
} from "../../crds/index.ts";
import { downloadsPerZone } from "../../crds/template-images.ts";
import { isConflict, isNotFound, objectKey } from "../../runtime/client.ts";
import type { ComponentContext } from "../../runtime/component.ts";
import { Controller } from "../../runtime/controller.ts";
import { notWrittenIfGone, removeFinalizer } from "../../runtime/objects.ts";
import { decideTemplateZones } from "./template-zones.ts";

export function templateController({
  client,
  informers,
  metrics,
  logger,
  events,
  fieldManager,
}: ComponentContext): Controller {
  const templates = informers.for<Template>(Resources.templates);
  const zones = informers.for<Zone>(Resources.zones);
  const hosts = informers.for<Host>(Resources.hosts, { indexers: { zone: (host) => [host.spec.zone] } });
  const vms = informers.for<VirtualMachine>(Resources.virtualMachines, {
    indexers: { template: (vm) => [vm.spec.template] },
  });
  const volumes = informers.for<Volume>(Resources.volumes, {
    indexers: { template: (v) => (v.spec.source?.template ? [v.spec.source.template] : []) },
  });
  const deletingNamed = (name: string | undefined) =>
    name && templates.get(name)?.metadata.deletionTimestamp ? [name] : [];
  /** Templates whose unfinished work in the host's zone a change of the host may let go on. */
  const waitingOn = (host: Host) =>
    templates
      .list()
      .filter((t) => downloadsPerZone(t) || t.metadata.deletionTimestamp)
      .filter((t) => {
        const entry = t.status?.zones?.find((z) => z.zone === host.spec.zone);
        return entry?.state !== (entry?.remove ? "Removed" : "Ready");
      })
      .map(objectKey);

  return new Controller({
    name: "storage-templates",
    logger,
    metrics,
    async reconcile(name, log) {
      const template = templates.get(name);
      if (!template) return undefined;
      const users = [...vms.byIndex("template", name), ...volumes.byIndex("template", name)].map(
        (o) => `${o.metadata.namespace}/${o.metadata.name}`,
      );
      const decision = decideTemplateZones({
        template,
        zones: zones.list(),
        hostsIn: (zone) => hosts.byIndex("zone", zone),
        users: [...new Set(users)].sort(),
      });
      if (decision.status) {
        try {
          await client.apply(
            Resources.templates,
            {
              metadata: {
                name,
                // A host is chosen from what the template was: never a second one by a stale cache.
                ...(decision.guarded ? { resourceVersion: template.metadata.resourceVersion as string } : {}),
              },
              status: decision.status,
            },
            { fieldManager, subresource: "status" },
          );
        } catch (error) {
          if (isConflict(error) || isNotFound(error)) return undefined;
          throw error;
        }
        const blocked = decision.status.conditions?.find((c) => c.type === "InUse" && c.status === "True");
        const before = template.status?.conditions?.find((c) => c.type === "InUse");
        if (blocked && before?.reason !== blocked.reason)
          await events.record(Resources.templates, template, {
            type: "Warning",
            reason: blocked.reason,
            action: "Delete",
            note: blocked.message,
          });
        if (decision.guarded)
          log.info({ zones: decision.status.zones }, "chose the hosts for the template's zone images");
        return undefined; // the next version comes through the watch
      }
      if (
        decision.release &&
        (await removeFinalizer(client, Resources.templates, template, TEMPLATE_IMAGES_FINALIZER).catch(
          notWrittenIfGone,
        ))
      )
        log.info("every zone's image of the template is removed; released it");
      return undefined;
    },
  })
    .watch(templates)
    .watch(zones, () => templates.keys())
    .watch(hosts, waitingOn)
    .watch(vms, (vm) => deletingNamed(vm.spec.template))
    .watch(volumes, (volume) => deletingNamed(volume.spec.source?.template));
}
