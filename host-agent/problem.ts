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
 * yet. The VM says what it waits for; the watch on that object brings the VM back.
 */
export class Waiting extends HostProblem {
  override name = "Waiting";
}
