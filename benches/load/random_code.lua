-- wrk script: GET /ld<random> over the N seeded codes (N is the first script argument).
local n = 1000
function init(args)
  n = tonumber(args[1]) or n
  math.randomseed(os.time() + math.floor(os.clock() * 1e6))
end
function request()
  return wrk.format("GET", "/ld" .. math.random(0, n - 1))
end
