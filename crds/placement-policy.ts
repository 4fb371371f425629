// Pinning a VM to a host (spec.placement.host) is an administrator's decision, whichever front door
// is used (kubectl, Argo CD, the CloudStack API): a ValidatingAdmissionPolicy installed with the CRDs
// refuses anyone else who sets, changes or clears it. "Administrator" is an RBAC question: `update`
// on the pseudo-subresource virtualmachines/placement cluster-wide, so no namespace's role grants it
// (stratus-cloud-admin does).
import { GROUP } from "./definition.ts";
import { admissionPolicy } from "./finalizers.ts";

export const PLACEMENT_POLICY_NAME = "stratus-vm-placement";

type Json = Record<string, unknown>;

/** The policy and its binding, as the API server takes them. */
export function renderPlacementPolicy(): [Json, Json] {
  return admissionPolicy("Validating", PLACEMENT_POLICY_NAME, {
    operations: ["CREATE", "UPDATE"],
    resources: ["virtualmachines"],
    spec: {
      variables: [
        { name: "pin", expression: "object.spec.?placement.?host.orValue('')" },
        {
          name: "pinBefore",
          expression: "oldObject == null ? '' : oldObject.spec.?placement.?host.orValue('')",
        },
      ],
      validations: [
        {
          expression: [
            "variables.pin == variables.pinBefore ||",
            `authorizer.group('${GROUP}').resource('virtualmachines').subresource('placement').check('update').allowed()`,
          ].join(" "),
          messageExpression: [
            "'only an administrator may pin a VM to a host (spec.placement.host): ' +",
            "request.userInfo.username + ' may not update virtualmachines/placement'",
          ].join(" "),
          reason: "Forbidden",
        },
      ],
    },
    binding: { validationActions: ["Deny"] },
  });
}
