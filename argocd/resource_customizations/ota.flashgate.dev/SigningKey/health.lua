-- Argo CD health of a flashgate SigningKey (docs/gitops.md). Healthy when Active (Ready), and
-- when Retiring or Retired (replaced by its successor: rotation as planned); Degraded when
-- Invalid, Revoked or Expired, with the operator's reason and message; Progressing while Pending
-- or Staged, and while the status is of an older generation than the spec.
local hs = {}
if obj.status == nil or obj.status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the flashgate operator"
  return hs
end
local generation = obj.metadata.generation
if generation ~= nil and obj.status.observedGeneration ~= generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the flashgate operator to evaluate generation " .. generation
  return hs
end
local phase = obj.status.phase
local message = phase .. " (" .. (obj.status.reason or phase) .. ": " .. (obj.status.message or "") .. ")"
if phase == "Invalid" or phase == "Revoked" or phase == "Expired" then
  hs.status = "Degraded"
  hs.message = message
  return hs
end
if phase == "Retiring" or phase == "Retired" then
  hs.status = "Healthy"
  hs.message = message
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
hs.message = message
return hs
