// Only administrators choose a network's segment: a tenant naming spec.vlan or spec.vni would
// join another tenant's (or the infrastructure's) segment. The network controller allocates one
// from the zone's range otherwise. "Administrator" is an RBAC grant, `update` on the virtual
// subresource networks/segment (the ClusterRole stratus-cloud-admin has it), which the API
// component asks about the same way (SubjectAccessReview), so both agree on who may.
import { GROUP } from "./definition.ts";
import { admissionPolicy } from "./finalizers.ts";

export const SEGMENT_POLICY_NAME = "stratus-network-segments";
/** The RBAC grant that lets a caller name a network's VLAN or VNI. */
export const SEGMENT_GRANT = { group: GROUP, plural: "networks", subresource: "segment", verb: "update" };

type Json = Record<string, unknown>;

export function renderSegmentPolicy(): [Json, Json] {
  const names = (o: string) =>
    `(has(${o}.spec.vlan) ? string(${o}.spec.vlan) : '') + '/' + (has(${o}.spec.vni) ? string(${o}.spec.vni) : '')`;
  return admissionPolicy("Validating", SEGMENT_POLICY_NAME, {
    operations: ["CREATE", "UPDATE"],
    resources: ["networks"],
    spec: {
      validations: [
        {
          // Unchanged segments pass, so a tenant can still edit its network's other fields.
          expression: [
            `(oldObject != null && ${names("object")} == ${names("oldObject")}) ||`,
            `(!has(object.spec.vlan) && !has(object.spec.vni)) ||`,
            `authorizer.group('${GROUP}').resource('${SEGMENT_GRANT.plural}').subresource('${SEGMENT_GRANT.subresource}').check('${SEGMENT_GRANT.verb}').allowed()`,
          ].join("\n"),
          message:
            "only administrators may set spec.vlan or spec.vni; leave them empty and the network controller allocates a VLAN from the zone's range",
          reason: "Forbidden",
        },
      ],
    },
    binding: { validationActions: ["Deny"] },
  });
}
