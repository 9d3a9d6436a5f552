-- Smooth weighted round-robin (nginx's): each pick adds every candidate's weight to its current weight `cw`
-- and takes the largest, which then gives back the total. State lives on the items themselves, so a list is
-- spread evenly by weight without a schedule to rebuild. Used for upstream nodes and AI targets.
local _M = {}

--- The next item of list among those ok(item) accepts (and, if prio is given, with item.priority == prio);
--- nil when none is accepted.
function _M.pick(list, ok, prio)
    local total, best = 0, nil
    for i = 1, #list do
        local t = list[i]
        if (prio == nil or t.priority == prio) and ok(t) then
            local w = t.weight
            t.cw = (t.cw or 0) + w
            total = total + w
            if best == nil or t.cw > best.cw then
                best = t
            end
        end
    end
    if best then
        best.cw = best.cw - total
    end
    return best
end

return _M
