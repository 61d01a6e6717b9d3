-- wrk script: GET /ld<random> over the N seeded codes (N is the first script argument;
-- a User-Agent to send is the optional second).
local n = 1000
local headers = nil
function init(args)
  n = tonumber(args[1]) or n
  if args[2] and args[2] ~= "" then
    headers = { ["User-Agent"] = args[2] }
  end
  math.randomseed(os.time() + math.floor(os.clock() * 1e6))
end
function request()
  return wrk.format("GET", "/ld" .. math.random(0, n - 1), headers)
end
