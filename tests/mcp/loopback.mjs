// Preloaded into server-everything by tests/mcp_support (node --import): its Express app
// listens on every interface (app.listen(PORT)); this makes a listen given only a port
// listen on 127.0.0.1, so the test server (whose get-env tool prints its environment) is
// reachable from this machine only.
import net from "node:net";

const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  if (typeof args[0] === "number" || (typeof args[0] === "string" && /^\d+$/.test(args[0]))) {
    const host = typeof args[1] === "string" ? [] : ["127.0.0.1"];
    args.splice(1, 0, ...host);
  }
  return listen.apply(this, args);
};
