-- Argo CD health of a stratus.io Host: maintenance is Suspended, a lost agent Degraded.
local ready = nil
if obj.status ~= nil and obj.status.conditions ~= nil then
  for _, c in ipairs(obj.status.conditions) do
    if c.type == "Ready" then ready = c end
  end
end
local state = obj.status and obj.status.resourceState
if state == "ErrorInMaintenance" then
  return { status = "Degraded", message = "Maintenance cannot finish: the host is not ready" }
end
if state == "PrepareForMaintenance" then
  return { status = "Progressing", message = "Moving VMs off the host" }
end
if state == "Maintenance" then
  return { status = "Suspended", message = "In maintenance" }
end
if ready == nil then
  return { status = "Progressing", message = "Waiting for the host agent's first heartbeat" }
end
if ready.status ~= "True" then
  return { status = "Degraded", message = ready.message }
end
return { status = "Healthy", message = "Ready, " .. (state or "Enabled") }
