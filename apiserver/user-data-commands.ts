// CloudStack's registered user data over the UserData kind of the caller's account: register, list,
// delete; `userdataid` on deployVirtualMachine and updateVirtualMachine copies it into the VM's own
// user data Secret (user-data.ts), so deleting it later changes no VM.
import { Resources, type UserData, userDataObjectName } from "../crds/index.ts";
import { isConflict, isNotFound } from "../runtime/client.ts";
import type { Command } from "./api.ts";
import { ApiError, ERROR, type Json } from "./envelope.ts";
import { inAccount, namespaced, ownedById, page, requiredOwnName } from "./listing.ts";
import { userDataProblem } from "./user-data.ts";

const PARAM_NAME = /^[A-Za-z_][A-Za-z0-9_]{0,63}$/;

const userDataName = (registered: UserData): string =>
  registered.spec.name ?? (registered.metadata.name as string);

function userDataView(registered: UserData): Record<string, Json> {
  return {
    id: registered.metadata.uid as string,
    name: userDataName(registered),
    account: registered.metadata.namespace as string,
    domain: "ROOT",
    userdata: registered.spec.userData,
    ...(registered.spec.params?.length ? { params: registered.spec.params.join(",") } : {}),
  };
}

const registerUserData: Command = {
  async handler(call) {
    const name = requiredOwnName(call);
    const userData = call.params.required("userdata");
    const problem = userDataProblem(userData, call.params.sentInQuery("userdata"));
    if (problem) throw new ApiError(ERROR.PARAM, problem);
    const params = call.params.list("params");
    const badParam = params.find((param) => !PARAM_NAME.test(param));
    if (badParam !== undefined || params.length > 32)
      throw new ApiError(
        ERROR.PARAM,
        `Invalid parameter params: at most 32 variable names of letters, digits and underscores${badParam ? ` (not ${badParam.slice(0, 40)})` : ""}`,
      );
    const objectName = userDataObjectName(name);
    try {
      const registered = await call.caller.client.create<UserData>(Resources.userData, {
        apiVersion: "stratus.io/v1alpha1",
        kind: "UserData",
        metadata: {
          name: objectName,
          namespace: call.caller.account,
          annotations: { "stratus.io/created-by": "cloudstack-api" },
        },
        spec: {
          userData,
          ...(params.length ? { params } : {}),
          ...(objectName === name ? {} : { name }),
        },
      });
      return { userdata: userDataView(registered) };
    } catch (error) {
      if (isConflict(error))
        throw new ApiError(ERROR.PARAM, `A userdata with name ${name} already exists for this account.`);
      throw error;
    }
  },
};

const listUserData: Command = {
  async handler(call) {
    const id = call.params.uuid("id");
    const name = call.params.get("name");
    const keyword = call.params.get("keyword")?.toLowerCase();
    const found = inAccount(call, await namespaced(call, call.api.registeredUserData, Resources.userData))
      .filter((u) => !id || u.metadata.uid === id)
      .filter((u) => !name || userDataName(u) === name)
      .filter((u) => !keyword || userDataName(u).toLowerCase().includes(keyword))
      .sort((a, b) => (a.metadata.creationTimestamp ?? "").localeCompare(b.metadata.creationTimestamp ?? ""));
    return page(call, "userdata", found.map(userDataView));
  },
};

const deleteUserData: Command = {
  async handler(call) {
    const registered = await ownedById(call, call.api.registeredUserData, Resources.userData);
    await call.caller.client
      .delete(Resources.userData, registered.metadata.name as string, registered.metadata.namespace, {
        uid: registered.metadata.uid as string,
      })
      .catch((error: unknown) => {
        if (!isNotFound(error)) throw error;
      });
    return { success: true };
  },
};

export const USER_DATA_COMMANDS: Record<string, Command> = { registerUserData, listUserData, deleteUserData };
