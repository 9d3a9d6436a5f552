-- sluice.rag.chunk: turning a document into the chunks an index holds (pure functions, no I/O).
--
--   local doc = chunk.parse("guide/admin.md", text)   -- {title, meta = {k = v}, sections = {{path = {...}, text}}}
--   local chunks = chunk.split(doc, {size = 1200, overlap = 150})   -- {{heading = "A > B", text = "..."}, ...}
--
-- Markdown (.md, .markdown): YAML-style front matter (`key: value` lines between `---` fences) becomes the
-- source's metadata; ATX (`## Title`) and setext (`Title` over `===` / `---`) headings open sections; fenced code
-- blocks are kept whole where they fit and never read as headings. HTML (.html, .htm): <script>, <style> and
-- comments dropped, <h1>..<h6> become headings, block tags line breaks, other tags removed, entities decoded.
-- Anything else is plain text: one section, split by paragraphs.
-- A section longer than `size` characters is cut at paragraph ends, else sentence ends, else spaces, and the
-- next piece starts with the last `overlap` characters of the one before (from a word start), so a sentence
-- cut in two is whole in one of them.
local ipairs, tonumber, tostring = ipairs, tonumber, tostring
local concat, insert = table.concat, table.insert
local find, sub, gsub, match, lower, char, byte = string.find, string.sub, string.gsub, string.match, string.lower,
    string.char, string.byte

local _M = {}

local function trim(s)
    return (gsub(gsub(s, "^%s+", ""), "%s+$", ""))
end

--- The kind of a file by its name: "markdown", "html" or "text".
function _M.kind(path)
    local ext = lower(match(path, "%.([%w]+)$") or "")
    if ext == "md" or ext == "markdown" or ext == "mdx" then return "markdown" end
    if ext == "html" or ext == "htm" or ext == "xhtml" then return "html" end
    return "text"
end

-- Front matter: `key: value` lines between a first line `---` and the next `---`; returns meta, rest.
local function front_matter(text)
    if sub(text, 1, 4) ~= "---\n" and sub(text, 1, 5) ~= "---\r\n" then return {}, text end
    local s, e = find(text, "\r?\n%-%-%-[ \t]*\r?\n", 4)
    if not s then return {}, text end
    local meta = {}
    for line in sub(text, 5, s):gmatch("[^\r\n]+") do
        local k, v = match(line, "^%s*([%w_%-%.]+)%s*:%s*(.-)%s*$")
        if k and v ~= "" then
            v = gsub(v, "^[\"'](.*)[\"']$", "%1")
            meta[k] = v
        end
    end
    return meta, sub(text, e + 1)
end

local ENTITIES = { amp = "&", lt = "<", gt = ">", quot = '"', apos = "'", nbsp = " ", ndash = "-", mdash = "-",
                   hellip = "...", copy = "(c)", rsquo = "'", lsquo = "'", rdquo = '"', ldquo = '"' }

local function utf8_char(cp)
    if cp < 0x80 then return char(cp) end
    if cp < 0x800 then return char(0xC0 + math.floor(cp / 64), 0x80 + cp % 64) end
    if cp < 0x10000 then
        return char(0xE0 + math.floor(cp / 4096), 0x80 + math.floor(cp / 64) % 64, 0x80 + cp % 64)
    end
    if cp < 0x110000 then
        return char(0xF0 + math.floor(cp / 262144), 0x80 + math.floor(cp / 4096) % 64, 0x80 + math.floor(cp / 64) % 64,
            0x80 + cp % 64)
    end
    return "?"
end

local function decode_entities(s)
    return (gsub(s, "&(#?[xX]?)(%w+);", function(kind, name)
        if kind == "" then return ENTITIES[lower(name)] end
        local cp = kind == "#" and tonumber(name) or tonumber(name, 16)
        return cp and utf8_char(cp) or nil
    end))
end

--- HTML to the markdown-like text parse() reads: headings as `#` lines, blocks as paragraphs; also the title.
function _M.html_text(html)
    local title = match(html, "<[tT][iI][tT][lL][eE][^>]*>(.-)</[tT][iI][tT][lL][eE]>")
    local s = gsub(html, "<!%-%-.-%-%->", "")
    for _, tag in ipairs({ "script", "style", "head", "noscript", "template", "svg" }) do
        local pat = "<" .. gsub(tag, "%a", function(c) return "[" .. c .. c:upper() .. "]" end)
        s = gsub(s, pat .. "[%s>].-</" .. sub(pat, 2) .. "%s*>", "")
    end
    s = gsub(s, "<[hH]([1-6])[^>]*>(.-)</[hH]%1%s*>", function(level, text)
        text = gsub(gsub(text, "<[^>]*>", ""), "%s+", " ")
        return "\n\n" .. string.rep("#", tonumber(level)) .. " " .. trim(decode_entities(text)) .. "\n\n"
    end)
    s = gsub(s, "<[pP][rR][eE][^>]*>(.-)</[pP][rR][eE]>", function(code)
        return "\n\n```\n" .. decode_entities(gsub(code, "<[^>]*>", "")) .. "\n```\n\n"
    end)
    s = gsub(s, "</?([%a][%w]*)[^>]*>", function(tag)
        tag = lower(tag)
        if tag == "p" or tag == "div" or tag == "li" or tag == "tr" or tag == "br" or tag == "section" or
            tag == "article" or tag == "ul" or tag == "ol" or tag == "table" or tag == "blockquote" or tag == "dd" or
            tag == "dt" then
            return "\n\n"
        end
        return (tag == "td" or tag == "th") and " " or ""
    end)
    s = decode_entities(s)
    s = gsub(s, "[ \t]+\n", "\n")
    s = gsub(s, "\n\n\n+", "\n\n")
    return s, title and trim(decode_entities(gsub(title, "%s+", " "))) or nil
end

--- Parses a document: {title, meta, sections = {{path = {heading, ...}, text}}} (path: the headings above,
--- outermost first; text without its heading line).
function _M.parse(path, text)
    local kind = _M.kind(path)
    local meta, title = {}, nil
    if kind == "html" then
        text, title = _M.html_text(text)
    elseif kind == "markdown" then
        meta, text = front_matter(text)
        title = meta.title
    end
    local sections, stack, lines = {}, {}, {}
    local function flush()
        local body = trim(concat(lines, "\n"))
        if body ~= "" then
            local p = {}
            for i = 1, 6 do if stack[i] then p[#p + 1] = stack[i] end end
            sections[#sections + 1] = { path = p, text = body }
        end
        lines = {}
    end
    local function heading(level, h)
        flush()
        stack[level] = h
        for i = level + 1, 6 do stack[i] = nil end
        if level == 1 and not title then title = h end
    end
    local fence
    for line in (text .. "\n"):gmatch("(.-)\r?\n") do
        local f = match(line, "^%s*(```+)") or match(line, "^%s*(~~~+)")
        if fence then
            if f and sub(f, 1, 1) == sub(fence, 1, 1) and #f >= #fence then fence = nil end
            lines[#lines + 1] = line
        elseif f then
            fence = f
            lines[#lines + 1] = line
        elseif kind ~= "text" and match(line, "^#+%s") and #match(line, "^(#+)") <= 6 then
            local hashes, h = match(line, "^(#+)%s+(.-)%s*#*%s*$")
            heading(#hashes, h)
        elseif kind == "markdown" and #lines > 0 and match(line, "^=+%s*$") and trim(lines[#lines]) ~= "" then
            local h = trim(table.remove(lines))
            heading(1, h)
        elseif kind == "markdown" and #lines > 0 and match(line, "^%-%-%-+%s*$") and trim(lines[#lines]) ~= ""
            and not match(lines[#lines], "^%s*[-*+|]") then
            local h = trim(table.remove(lines))
            heading(2, h)
        else
            lines[#lines + 1] = line
        end
    end
    flush()
    return { title = title, meta = meta, sections = sections }
end

-- Where to cut s (at most size bytes): the last paragraph end, else sentence end, else space in its second
-- half; else size. Never inside a UTF-8 sequence.
local function cut_at(s, size)
    if #s <= size then return #s end
    local half = math.floor(size / 2)
    local best
    local i = 1
    while true do
        local a, b = find(s, "\n%s*\n", i)
        if not a or b > size then break end
        if a >= half then best = b end
        i = b + 1
    end
    if best then return best end
    i = half
    while true do
        local a, b = find(s, "[%.!?:;][\"')%]]?%s", i)
        if not a or b > size then break end
        best, i = b, b + 1
    end
    if best then return best end
    for j = size, half, -1 do
        if find(sub(s, j, j), "%s") then return j end
    end
    local j = size
    while j > 1 and byte(s, j + 1) and byte(s, j + 1) >= 0x80 and byte(s, j + 1) < 0xC0 do j = j - 1 end
    return j
end

-- The start of the overlap: the last `overlap` bytes of piece, moved forward to a word start.
local function overlap_of(piece, overlap)
    if overlap <= 0 or #piece <= overlap then return "" end
    local from = #piece - overlap + 1
    local ws = find(piece, "%s", from)
    if not ws then return "" end
    return trim(sub(piece, ws))
end

--- Splits text into pieces of at most size bytes (see the top), each later one starting with the overlap.
function _M.pieces(text, size, overlap)
    local out = {}
    local rest = text
    local carry = ""
    while #rest > 0 do
        local room = size - (#carry > 0 and #carry + 1 or 0)
        if room < size / 2 then carry, room = "", size end
        local n = cut_at(rest, room)
        local piece = trim(sub(rest, 1, n))
        rest = sub(rest, n + 1)
        if piece ~= "" then
            out[#out + 1] = carry ~= "" and (carry .. " " .. piece) or piece
            carry = overlap_of(piece, overlap)
        end
    end
    return out
end

--- The chunks of a parsed document: {{heading = "Title > Section", text}, ...}. opts: size (bytes, default
--- 1200), overlap (default 150). A section under its own heading is one chunk when it fits.
function _M.split(doc, opts)
    opts = opts or {}
    local size, overlap = opts.size or 1200, opts.overlap or 150
    if overlap >= size / 2 then overlap = math.floor(size / 4) end
    local out = {}
    for _, s in ipairs(doc.sections) do
        local p = s.path
        if #p == 0 and doc.title then p = { doc.title } end
        local heading = concat(p, " > ")
        for _, piece in ipairs(_M.pieces(s.text, size, overlap)) do
            out[#out + 1] = { heading = heading, text = piece }
        end
    end
    return out
end

--- The metadata table as "key\0value\0" pairs (sorted by key), as the index stores it.
function _M.meta_bytes(meta)
    local keys = {}
    for k in pairs(meta or {}) do keys[#keys + 1] = tostring(k) end
    table.sort(keys)
    local parts = {}
    for _, k in ipairs(keys) do
        insert(parts, k)
        insert(parts, tostring(meta[k]))
    end
    if #parts == 0 then return "" end
    return concat(parts, "\0") .. "\0"
end

return _M
