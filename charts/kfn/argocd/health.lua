-- Argo CD health of kfn's resources (kfn.dev/v1alpha1 Function, FunctionVersion,
-- Alias, EventSourceMapping). One script for the four kinds: Argo CD runs it
-- per object (argocd-cm key resource.customizations.health.kfn.dev_<Kind>) and
-- it branches on obj.kind only where a kind has fields of its own.
--
--   Progressing  the operator has not yet acted on this generation of the spec
--                (status.observedGeneration, or the Ready condition's own
--                observedGeneration, is behind metadata.generation), or Ready is
--                not True for a reason that resolves by itself (rolling out,
--                targets not ready yet)
--   Degraded     Ready is False for a reason only a change can fix (the reasons
--                below, from kfn/conditions.py), or status.state is Failed, or the
--                latest update failed (status.lastUpdateStatus Failed: its new
--                environments cannot start while the previous ones still serve)
--   Suspended    a Function or FunctionVersion with reservedConcurrency 0 (every
--                invocation is throttled); an EventSourceMapping with
--                enabled: false or state Disabled
--   Healthy      Ready is True for the current generation
local hs = {}
local generation = obj.metadata.generation or 0
local spec = obj.spec or {}
local status = obj.status or {}

-- Ready=False reasons that wait for a person, not for time (kfn/conditions.py)
local broken = {
  InvalidSpec = true, CodeNotFound = true, CodeTooLarge = true, CodeChanged = true,
  ApplyFailed = true, DeploymentFailed = true, FunctionNotFound = true, VersionNotFound = true,
}

local function suspended()
  if obj.kind == "Function" and spec.reservedConcurrency == 0 then
    return "reservedConcurrency is 0: every invocation is throttled"
  end
  if obj.kind == "FunctionVersion" and spec.config ~= nil and spec.config.reservedConcurrency == 0 then
    return "reservedConcurrency is 0 in this version: every invocation is throttled"
  end
  if obj.kind == "EventSourceMapping" and (spec.enabled == false or status.state == "Disabled") then
    return "enabled is false: the mapping does not read its source"
  end
  return nil
end

if status.observedGeneration == nil or status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for kfn's operator to act on generation " .. generation
  return hs
end

local ready = nil
if status.conditions ~= nil then
  for _, c in ipairs(status.conditions) do
    if c.type == "Ready" then
      ready = c
      break
    end
  end
end
if ready == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the Ready condition"
  return hs
end
if ready.observedGeneration ~= nil and ready.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Ready is from generation " .. ready.observedGeneration .. "; waiting for " .. generation
  return hs
end

local message = ready.message or ""
if ready.status == "False" and (broken[ready.reason] or status.state == "Failed") then
  hs.status = "Degraded"
  hs.message = (ready.reason or "") .. ": " .. message
  return hs
end
if ready.status == "True" and status.lastUpdateStatus == "Failed" then
  hs.status = "Degraded"
  hs.message = "The update failed (" .. (status.lastUpdateStatusReasonCode or "") .. "): " ..
    (status.lastUpdateStatusReason or "") .. "; the previous environments still serve"
  return hs
end
local why = suspended()
if why ~= nil then
  hs.status = "Suspended"
  hs.message = why
  return hs
end
if ready.status == "True" then
  hs.status = "Healthy"
  hs.message = message
  return hs
end
hs.status = "Progressing"
hs.message = (ready.reason or "") .. ": " .. message
return hs
