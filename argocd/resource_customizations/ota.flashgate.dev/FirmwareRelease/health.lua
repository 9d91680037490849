-- Argo CD health of a flashgate FirmwareRelease (docs/gitops.md). Healthy once Published (Ready),
-- Degraded when Rejected or Withdrawn, with the operator's reason and message; Progressing
-- while Pending or Verifying, and while the status is of an older generation than the spec.
local hs = {}
if obj.status == nil or obj.status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the flashgate operator"
  return hs
end
local generation = obj.metadata.generation
if generation ~= nil and obj.status.observedGeneration ~= generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the flashgate operator to decide generation " .. generation
  return hs
end
local message = obj.status.message or ""
if obj.status.reason ~= nil then
  message = obj.status.reason .. ": " .. message
end
local phase = obj.status.phase
if phase == "Rejected" or phase == "Withdrawn" then
  hs.status = "Degraded"
  hs.message = phase .. " (" .. message .. ")"
  return hs
end
if obj.status.conditions ~= nil then
  for _, condition in ipairs(obj.status.conditions) do
    if condition.type == "Ready" and condition.status == "True" then
      hs.status = "Healthy"
      hs.message = message
      return hs
    end
  end
end
hs.status = "Progressing"
hs.message = phase .. " (" .. message .. ")"
return hs
