/**
 * A failure a user can fix (a bad template URL, a wrong checksum, a full pool): the agent reports
 * it as the object's condition, with `reason` as the condition reason, and keeps serving others.
 */
export class HostProblem extends Error {
  override name = "HostProblem";
  readonly reason: string;
  constructor(reason: string, message: string) {
    super(message);
    this.reason = reason;
  }
}

/**
 * Not a failure: something another component prepares (a volume binding, an address) is not there
 * yet; the watch on that object brings the VM back. `shown`: nothing else tells the user (another
 * component's condition does for the others), so the VM's Ready condition says what it waits for.
 */
export class Waiting extends HostProblem {
  override name = "Waiting";
  readonly shown: boolean;
  constructor(reason: string, message: string, options: { shown?: boolean } = {}) {
    super(reason, message);
    this.shown = options.shown === true;
  }
}
