-- Argo CD health of a flashgate RollbackFloor (docs/gitops.md). A floor is a fact, not a
-- process: Healthy once it exists, saying its value and what last raised it; Progressing only
-- while a status that records a generation is behind the spec.
local hs = {}
local generation = obj.metadata.generation
if obj.status ~= nil and obj.status.observedGeneration ~= nil and generation ~= nil
    and obj.status.observedGeneration ~= generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the flashgate operator to observe generation " .. generation
  return hs
end
hs.status = "Healthy"
hs.message = "floor " .. obj.spec.securityVersion .. " for " .. obj.spec.product .. " " .. obj.spec.tier
if obj.status ~= nil and obj.status.lastRaisedBy ~= nil then
  hs.message = hs.message .. ", raised by release " .. obj.status.lastRaisedBy
end
return hs
