-- Argo CD health of a stratus.io VirtualMachine. A VM that is stopped because its runStrategy asks
-- for it (Halted, or a RerunOnFailure guest that shut itself down) is Healthy, not Progressing.
local hs = { status = "Progressing", message = "Waiting for the VM to be placed and started" }

local function condition(kind)
  if obj.status ~= nil and obj.status.conditions ~= nil then
    for _, c in ipairs(obj.status.conditions) do
      if c.type == kind then return c end
    end
  end
  return nil
end

if obj.metadata.deletionTimestamp ~= nil then
  return { status = "Progressing", message = "Deleting" }
end
if obj.status == nil then return hs end

local state = obj.status.state
local ready = condition("Ready")
local scheduled = condition("Scheduled")
local strategy = obj.spec.runStrategy or "Always"

if state == "Error" then
  return { status = "Degraded", message = (ready and ready.message) or "The VM is in error" }
end
if scheduled ~= nil and scheduled.status == "False" and scheduled.reason == "Unschedulable" then
  return { status = "Degraded", message = scheduled.message }
end
-- fabric sets HostReady False while the VM's host has lost its heartbeat: nobody knows the state.
local hostReady = condition("HostReady")
if state == "Unknown" or (hostReady ~= nil and hostReady.status == "False") then
  return {
    status = "Unknown",
    message = (hostReady and hostReady.message) or (ready and ready.message) or "The VM's host does not answer",
  }
end
-- Only agents report a state: a Halted VM that never got a host is stopped as asked.
if state == nil and strategy == "Halted" and obj.status.host == nil then state = "Stopped" end
if obj.status.observedGeneration ~= nil and obj.metadata.generation ~= nil
    and obj.status.observedGeneration < obj.metadata.generation then
  return { status = "Progressing", message = "Waiting for the host to act on the new spec" }
end
if state == "Running" and strategy ~= "Halted" and ready ~= nil and ready.status == "True" then
  return { status = "Healthy", message = "Running on " .. (obj.status.host or "its host") }
end
if state == "Stopped" and (strategy == "Halted" or strategy == "Manual"
    or (ready ~= nil and ready.reason == "GuestShutdown")) then
  return { status = "Healthy", message = "Stopped, as runStrategy " .. strategy .. " asks" }
end
if state ~= nil then hs.message = "The VM is " .. state end
return hs
