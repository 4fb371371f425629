// A guest network's router rules shared by the unit and the kernel tests of host-agent/router/.
import type { PortForward, RouterRules } from "../router/router-rules.ts";

/** The web server of guest 10.1.1.5 at public port 8080 of the source-NAT address. */
export const WEB_FORWARD: PortForward = {
  publicIp: "198.51.100.10",
  protocol: "tcp",
  publicPorts: { start: 8080, end: 8080 },
  guestIp: "10.1.1.5",
  guestPorts: { start: 80, end: 80 },
};

/** 10.1.1.0/24 behind 198.51.100.10, nothing forwarded, egress open. */
export const BASE_RULES: RouterRules = {
  guestCidr: "10.1.1.0/24",
  guestGateway: "10.1.1.1",
  sourceNatIp: "198.51.100.10",
  staticNat: [],
  portForwards: [],
  loadBalancers: [],
  firewall: [],
  egressDefaultAllow: true,
  egress: [],
};
