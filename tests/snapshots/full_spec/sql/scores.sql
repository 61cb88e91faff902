select customer_id, count(*) as orders from domain.orders group by customer_id
