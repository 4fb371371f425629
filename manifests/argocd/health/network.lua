-- Argo CD health of a stratus.io Network.
local ready = nil
local inUse = nil
if obj.status ~= nil and obj.status.conditions ~= nil then
  for _, c in ipairs(obj.status.conditions) do
    if c.type == "Ready" then ready = c end
    if c.type == "InUse" then inUse = c end
  end
end
if obj.metadata.deletionTimestamp ~= nil then
  return { status = "Progressing", message = (inUse and inUse.message) or "Deleting" }
end
if ready ~= nil and ready.status == "True" then
  return { status = "Healthy", message = ready.message }
end
if ready ~= nil and ready.reason == "VlansExhausted" then
  return { status = "Degraded", message = ready.message }
end
return { status = "Progressing", message = "Waiting for a VLAN" }
