-- ai-prompt-template: named request templates with {{variable}} placeholders, chosen by the client.
--
--   plugins:
--     ai-prompt-template:
--       allow_untemplated_requests: false
--       templates:
--         - name: summarize
--           template:                      # the request body (any JSON object), placeholders in strings only
--             model: gpt-4o-mini
--             messages:
--               - {role: system, content: "You summarize {{kind}} documents."}
--               - {role: user, content: "Summarize in at most {{words}} words:\n\n{{text}}"}
--           variables:                     # optional; when given, only these names are accepted
--             kind: {default: "technical"}
--             words: {default: "50", pattern: "^%d+$"}
--             text: {max_length: 20000}
--
-- The client sends {"template": "summarize", "variables": {"text": "..."}} (plus allowed extra fields such as
-- "stream"), or an OpenAI/Anthropic body whose only message has the content "{template://summarize}" and a
-- top-level "variables". The body sent on is the template with every placeholder replaced inside string values,
-- so a variable can never change the JSON structure or add messages. Errors are 400 in the client's API shape
-- and name the variable. Runs in rewrite at priority 1071 (before ai-prompt-decorator, 1070).
local sluice = require("sluice")

local type, pairs, ipairs, tostring, next, pcall = type, pairs, ipairs, tostring, next, pcall
local find, gsub, format, sort, concat = string.find, string.gsub, string.format, table.sort, table.concat
local request = sluice.request

local NAME_PAT = "^[%w_%.%-]+$"
local PLACEHOLDER = "{{%s*([%w_%.%-]+)%s*}}"
local REF_PAT = "^%s*{template://([%w_%.%-]+)}%s*$"

local variable = {
    type = "object",
    additionalProperties = false,
    properties = {
        default = { type = { "string", "number", "boolean" } },
        pattern = { type = "string", minLength = 1 },            -- Lua pattern the value must match
        enum = { type = "array", items = { type = "string" }, minItems = 1 },
        max_length = { type = "integer", minimum = 1 },
        description = { type = "string" },
    },
}

local schema = {
    type = "object",
    required = { "templates" },
    additionalProperties = false,
    properties = {
        templates = {
            type = "array", minItems = 1, maxItems = 1000,
            items = {
                type = "object",
                required = { "name", "template" },
                additionalProperties = false,
                properties = {
                    name = { type = "string", pattern = NAME_PAT, maxLength = 128 },
                    template = { type = "object", minProperties = 1 },
                    variables = { type = "object", patternProperties = { [NAME_PAT] = variable },
                                  additionalProperties = false },
                    description = { type = "string" },
                },
            },
        },
        allow_untemplated_requests = { type = "boolean", default = true },
        -- top-level request fields copied into the templated body when the template does not set them
        passthrough_fields = {
            type = "array", items = { type = "string" },
            default = { "stream", "stream_options", "temperature", "top_p", "max_tokens", "max_completion_tokens",
                        "user", "seed", "n", "stop", "metadata" },
        },
        max_variable_length = { type = "integer", minimum = 1, default = 65536 },
    },
}

local _M = { name = "ai-prompt-template", version = "1.0", priority = 1071, schema = schema }

-- Calls fn(name) for every placeholder in every string value of a template (keys are left alone).
local function each_placeholder(v, fn)
    if type(v) == "string" then
        for name in v:gmatch(PLACEHOLDER) do fn(name) end
    elseif type(v) == "table" then
        for _, x in pairs(v) do each_placeholder(x, fn) end
    end
end

--- Placeholder names used by a template body, sorted.
function _M.placeholders(tpl)
    local seen, list = {}, {}
    each_placeholder(tpl, function(name)
        if not seen[name] then
            seen[name] = true
            list[#list + 1] = name
        end
    end)
    sort(list)
    return list
end

function _M.check(conf)
    local names = {}
    for i, t in ipairs(conf.templates) do
        if names[t.name] then
            return nil, format("templates[%d].name: duplicate template name %q", i, t.name)
        end
        names[t.name] = true
        for _, k in ipairs(_M.placeholders(t.template)) do
            if t.variables and not t.variables[k] then
                return nil, format("templates[%d].variables: placeholder {{%s}} is used but not declared", i, k)
            end
        end
        for k, def in pairs(t.variables or {}) do
            if def.pattern and not pcall(find, "", def.pattern) then
                return nil, format("templates[%d].variables.%s.pattern: invalid Lua pattern", i, k)
            end
        end
    end
    return true
end

-- Template lookup by name, built once per conf table (conf is the same table for every request of a config).
local index_cache = setmetatable({}, { __mode = "k" })
local function find_template(conf, name)
    local idx = index_cache[conf]
    if not idx then
        idx = {}
        for _, t in ipairs(conf.templates) do
            idx[t.name] = { template = t.template, variables = t.variables, names = _M.placeholders(t.template) }
        end
        index_cache[conf] = idx
    end
    return idx[name]
end

local function fail(code, msg)
    return { status = 400, code = code, message = msg }
end

-- Substitutes vars into a copy of v: inside string values only, in one pass (a value that itself contains
-- "{{x}}" is not expanded again; `%` in a value is literal).
local function fill(v, vars)
    if type(v) == "string" then
        return (gsub(v, PLACEHOLDER, vars))
    elseif type(v) == "table" then
        local out = {}
        for k, x in pairs(v) do out[k] = fill(x, vars) end
        return setmetatable(out, getmetatable(v))
    end
    return v
end

--- Resolves the variables for template entry t from the client's `given`; returns vars | nil, failure.
local function resolve(conf, t, given)
    if given ~= nil and (type(given) ~= "table" or (next(given) ~= nil and given[1] ~= nil)) then
        return nil, fail("invalid_template_variables", "variables must be a JSON object")
    end
    given = given or {}
    local declared = t.variables
    local used = {}
    for _, n in ipairs(t.names) do used[n] = true end
    local names = {}
    for k in pairs(given) do names[#names + 1] = tostring(k) end
    sort(names)
    for _, k in ipairs(names) do
        if not (used[k] or (declared and declared[k])) then
            return nil, fail("unknown_template_variable", format("variable %q is not used by this template", k))
        end
    end
    local vars = {}
    for _, k in ipairs(t.names) do
        local def = declared and declared[k] or {}
        local v = given[k]
        if v == nil or v == sluice.json.null then
            v = def.default
        end
        if v == nil then
            return nil, fail("missing_template_variable", format("missing template variable %q", k))
        end
        local tv = type(v)
        if tv == "number" or tv == "boolean" then
            v = tostring(v)
        elseif tv ~= "string" then
            return nil, fail("invalid_template_variable",
                format("template variable %q must be a string, number or boolean", k))
        end
        if #v > (def.max_length or conf.max_variable_length) then
            return nil, fail("invalid_template_variable",
                format("template variable %q is longer than %d bytes", k, def.max_length or conf.max_variable_length))
        end
        if def.pattern and not find(v, def.pattern) then
            return nil, fail("invalid_template_variable", format("template variable %q has an invalid value", k))
        end
        if def.enum then
            local ok = false
            for _, e in ipairs(def.enum) do
                if e == v then ok = true break end
            end
            if not ok then
                return nil, fail("invalid_template_variable",
                    format("template variable %q must be one of: %s", k, concat(def.enum, ", ")))
            end
        end
        vars[k] = v
    end
    return vars
end

-- The template a request selects: name, or nil when it is untemplated; a body reference counts too.
local function selected(body)
    local name = body.template
    if name ~= nil then
        return name
    end
    local msgs = body.messages
    if type(msgs) == "table" and #msgs == 1 and type(msgs[1]) == "table" and type(msgs[1].content) == "string" then
        return msgs[1].content:match(REF_PAT)
    end
    return nil
end

--- Applies conf to a decoded request body; returns the new body | false (untemplated, allowed) | nil, failure.
function _M.render(conf, body)
    if type(body) ~= "table" then
        if conf.allow_untemplated_requests then
            return false
        end
        return nil, fail("template_required", "this route only accepts templated requests: send "
            .. '{"template": NAME, "variables": {...}}')
    end
    local name = selected(body)
    if name == nil then
        if conf.allow_untemplated_requests then
            return false
        end
        return nil, fail("template_required", "this route only accepts templated requests: send "
            .. '{"template": NAME, "variables": {...}}')
    end
    if type(name) ~= "string" then
        return nil, fail("invalid_template", "template must be a string")
    end
    local t = find_template(conf, name)
    if not t then
        return nil, fail("template_not_found", format("template %q does not exist", name))
    end
    local vars, err = resolve(conf, t, body.variables)
    if not vars then
        return nil, err
    end
    local out = fill(t.template, vars)
    for _, f in ipairs(conf.passthrough_fields) do
        if out[f] == nil and body[f] ~= nil then
            out[f] = body[f]
        end
    end
    return out
end

--- An error body in the shape of the API the client called.
function _M.error_body(path, f)
    if find(path, "/messages$") then
        return { type = "error", error = { type = "invalid_request_error", message = f.message } }
    end
    return { error = { message = f.message, type = "invalid_request_error", code = f.code } }
end

function _M.rewrite(conf, ctx)
    local body = request.get_json(ctx)
    local out, err = _M.render(conf, body)
    if out == false then
        return
    end
    if not out then
        return err.status, _M.error_body(ctx.path, err)
    end
    request.set_json(out, ctx)
end

return _M
