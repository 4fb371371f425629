-- Argo CD health of a stratus.io Volume.
if obj.metadata.deletionTimestamp ~= nil then
  return { status = "Progressing", message = "Deleting (waits while a VM attaches it)" }
end
local phase = obj.status and obj.status.phase
if phase == "Ready" or phase == "Attached" then
  return { status = "Healthy", message = phase }
end
if phase == "Error" then
  return { status = "Degraded", message = "The volume could not be created" }
end
return { status = "Progressing", message = "Waiting for the disk (" .. (phase or "not bound yet") .. ")" }
