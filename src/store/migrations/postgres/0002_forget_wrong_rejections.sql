-- Only the push service's token-dead answers are remembered now. Rows that
-- earlier versions wrote for the request's own data (a bad default_payload, an
-- incomplete subscription, a refused endpoint) or for a configuration matter
-- (SENDER_ID_MISMATCH, TopicDisallowed) would keep answering "rejected" for up
-- to 30 days: dropped. Web Push rows are now keyed by endpoint, so the old
-- ones (keyed by p256dh) go too.
DELETE FROM rejections WHERE NOT (
    reason LIKE 'APNs answered 410%'
    OR reason LIKE 'APNs answered 400 BadDeviceToken%'
    OR reason LIKE 'APNs answered 400 DeviceTokenNotForTopic%'
    OR reason LIKE 'FCM answered 404%'
    OR reason LIKE 'FCM answered 400%'
    OR (reason LIKE 'FCM answered %' AND reason LIKE '%UNREGISTERED%'));
